// A stream that goes on only while the bearer token it was opened with is accepted. A Session or
// MapStream may run for hours after its one admission (call_gate.h); when the operator removes
// a token (leaked, or rotated out) and reloads, the streams opened with it end UNAUTHENTICATED
// at their next message (in the middle of a _list, at the first message after it) instead of
// running on. cnp-adapter then reconnects with its token file as it is at that moment and
// replays its session, so a rotation done in order (the new token given to the clients before
// the old one leaves the server) costs CouchDB nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "grpcpp/server_context.h"
#include "service/rpc/call_gate.h"
#include "service/rpc/stream_call.h"

namespace cnp::rpc {

template <class Request, class Response>
class TokenBoundStream final : public StreamHandler<Request, Response> {
 public:
  using Inner = StreamHandler<Request, Response>;

  // `generation`: the gate's TokenGeneration taken before the stream's Admit, so that a reload
  // between the two is not missed.
  TokenBoundStream(std::unique_ptr<Inner> inner, const CallGate& gate,
                   const grpc::ServerContext& context, const char* method, uint64_t generation)
      : inner_(std::move(inner)), gate_(gate), context_(context), method_(method),
        checked_(generation) {}

  asio::awaitable<absl::StatusOr<std::optional<Response>>> Handle(Request& request) override {
    if (absl::Status admitted = Readmit(); !admitted.ok()) co_return admitted;
    co_return co_await inner_->Handle(request);
  }
  asio::awaitable<absl::StatusOr<std::optional<Response>>> HandleGrowing(
      Request& request, const calls::AnswerGrowth& grown) override {
    if (absl::Status admitted = Readmit(); !admitted.ok()) co_return admitted;
    co_return co_await inner_->HandleGrowing(request, grown);
  }
  bool EndsStream(const Response& response) override { return inner_->EndsStream(response); }
  absl::Duration HeartbeatInterval() const override { return inner_->HeartbeatInterval(); }
  Response Heartbeat() const override { return inner_->Heartbeat(); }
  std::optional<Response> Forewarning(int64_t answer_bytes) const override {
    return inner_->Forewarning(answer_bytes);
  }
  bool HoldsCommandOpen() const override { return inner_->HoldsCommandOpen(); }
  void WriteEarlyWith(typename StreamHandler<Request, Response>::EarlyWriter writer) override {
    inner_->WriteEarlyWith(std::move(writer));
  }
  asio::awaitable<void> Close() override { co_await inner_->Close(); }

 private:
  // Not between the requests of one command (a list's rows): cut there, it could not be
  // replayed (cnp-adapter never sends a list's step again), and CouchDB would get an error for
  // the list; the token is checked again at the next command.
  absl::Status Readmit() {
    if (inner_->HoldsCommandOpen()) return absl::OkStatus();
    return gate_.Readmit(context_, method_, checked_);
  }

  const std::unique_ptr<Inner> inner_;
  const CallGate& gate_;
  const grpc::ServerContext& context_;
  const char* const method_;
  uint64_t checked_;
};

}  // namespace cnp::rpc
