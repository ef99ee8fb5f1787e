// Every cnp.v1.Functions RPC receives its request as bytes and parses it here, once the call
// has been admitted (call_gate.h), rather than letting gRPC parse it first: gRPC answers a
// request it cannot parse INTERNAL "Unable to parse request" before any code of ours runs, so
// on a plaintext listener a peer without the token got that instead of UNAUTHENTICATED, no
// access-log line, and a protobuf log line for each such request. Here a request that does not
// parse is INVALID_ARGUMENT, with what protobuf found wrong (proto/cnp/v1/functions.proto),
// and protobuf's own line about it goes into that answer rather than into the log
// (service/common/protobuf_log.h).
//
// Before protobuf builds anything, the request's bytes are walked against its type
// (wire_shape.h): fields the type does not have, known fields sent as another wire type, and
// repeated fields past their caps (RequestFieldCaps) are refused, so that what a parsed request
// holds stays within a few times its bytes.
//
// Map is parsed by its own reader, straight from the bytes (encoded_map_call.h), after the same
// walk (CheckRequestShape); unary RPCs, streams (ParsingStreamHandler) and Upload
// (server_stream_call.h) use ParseRequest.
#pragma once

#include <memory>
#include <utility>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/awaitable.hpp"
#include "absl/types/span.h"
#include "google/protobuf/io/zero_copy_stream.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/status.h"
#include "service/rpc/stream_call.h"
#include "service/rpc/wire_shape.h"

namespace cnp::rpc {

// The most files one Upload carries: a project's YAML files are a few dozen.
inline constexpr int64_t kMaxUploadFiles = 1024;

// The caps of the requests' repeated fields: the function names of a Map (MapStream message),
// Reduce or Resolve at kMaxFunctionsPerCall (RESOURCE_EXHAUSTED marked "cnp-call-limit:
// functions 4096", as Map and Reduce answer after parsing), an Upload's files at
// kMaxUploadFiles, and a MapStream message's documents at `max_docs_per_call` (marked
// "documents <max_docs_per_call>"; a unary Map counts its own, in place).
std::vector<RepeatedFieldCap> RequestFieldCaps(int64_t max_docs_per_call);

// OK when `wire`, a `type` request of `rpc`, may be parsed (wire_shape.h); else the cap's
// refusal, or INVALID_ARGUMENT naming `rpc`, the type and what was wrong.
absl::Status CheckRequestShape(google::protobuf::io::ZeroCopyInputStream& wire, const char* rpc,
                               const google::protobuf::Descriptor& type,
                               absl::Span<const RepeatedFieldCap> caps);

// Parses `bytes` (consumed) into `request`, once CheckRequestShape let them: INVALID_ARGUMENT
// naming `rpc`, the message type and what was wrong when they are not one.
absl::Status ParseRequest(grpc::ByteBuffer& bytes, const char* rpc,
                          google::protobuf::Message& request,
                          absl::Span<const RepeatedFieldCap> caps);

// A response as the bytes gRPC sends (what gRPC does for a typed method).
template <class Message>
grpc::Status SerializeResponse(const Message& response, grpc::ByteBuffer& bytes) {
  bool own_buffer = false;
  return grpc::GenericSerialize<grpc::ProtoBufferWriter, Message>(response, &bytes, &own_buffer);
}

// A stream of typed messages served on one of bytes: each request is parsed (one that does not
// parse ends the stream INVALID_ARGUMENT) and each answer serialized, around `typed`.
template <class Request, class Response>
class ParsingStreamHandler final : public StreamHandler<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  // `caps` (RequestFieldCaps) outlive the handler.
  ParsingStreamHandler(std::unique_ptr<StreamHandler<Request, Response>> typed, const char* rpc,
                       absl::Span<const RepeatedFieldCap> caps)
      : typed_(std::move(typed)), rpc_(rpc), caps_(caps) {}

  asio::awaitable<absl::StatusOr<std::optional<grpc::ByteBuffer>>> Handle(
      grpc::ByteBuffer& bytes) override {
    // One request object for the stream, as gRPC had: its fields' memory is reused.
    const size_t request_bytes = bytes.Length();
    if (absl::Status parsed = ParseRequest(bytes, rpc_, request_, caps_); !parsed.ok()) co_return parsed;
    absl::StatusOr<std::optional<Response>> answer = co_await typed_->Handle(request_);
    // A big request's memory is not kept for the next one: a stream that then goes quiet
    // would hold up to --max-call-bytes for as long as it stays open, uncounted by
    // --max-grpc-memory. Small requests keep reusing theirs (and cost no check: only a big
    // request grows the object past what small ones need).
    if (request_bytes > kKeptRequestBytes) request_ = Request();
    if (!answer.ok()) co_return answer.status();
    if (!answer->has_value()) co_return std::nullopt;
    ends_stream_ = typed_->EndsStream(**answer);
    grpc::ByteBuffer out;
    if (grpc::Status written = SerializeResponse(**answer, out); !written.ok()) {
      co_return absl::InternalError(
          absl::StrCat("cannot encode the answer: ", written.error_message()));
    }
    co_return out;
  }
  // Asked right after Handle, of the answer it returned.
  bool EndsStream(const grpc::ByteBuffer&) override { return ends_stream_; }
  bool HoldsCommandOpen() const override { return typed_->HoldsCommandOpen(); }
  absl::Duration HeartbeatInterval() const override { return typed_->HeartbeatInterval(); }
  grpc::ByteBuffer Heartbeat() const override {
    grpc::ByteBuffer out;
    // A heartbeat is a small message of our own: it always encodes.
    (void)SerializeResponse(typed_->Heartbeat(), out);
    return out;
  }
  std::optional<grpc::ByteBuffer> Forewarning(int64_t answer_bytes) const override {
    std::optional<Response> notice = typed_->Forewarning(answer_bytes);
    if (!notice.has_value()) return std::nullopt;
    grpc::ByteBuffer out;
    (void)SerializeResponse(*notice, out);  // a small message of our own: it always encodes
    return out;
  }
  void WriteEarlyWith(EarlyWriter writer) override {
    typed_->WriteEarlyWith([writer = std::move(writer)](Response early) {
      grpc::ByteBuffer out;
      return SerializeResponse(early, out).ok() && writer(std::move(out));
    });
  }
  asio::awaitable<void> Close() override { co_await typed_->Close(); }

 private:
  static constexpr size_t kKeptRequestBytes = size_t{1} << 20;

  const std::unique_ptr<StreamHandler<Request, Response>> typed_;
  const char* const rpc_;
  const absl::Span<const RepeatedFieldCap> caps_;
  Request request_;
  bool ends_stream_ = false;
};

}  // namespace cnp::rpc
