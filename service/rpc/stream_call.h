// One bidirectional stream on the async API, in lockstep: read a request, run the stream's
// handler on this thread, write its answer (if any), read the next. Long-lived streams (the
// adapter's session, MapStream) therefore cost no thread hop per message.
#pragma once

#include <functional>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "service/rpc/call.h"
#include "service/rpc/status_mapping.h"

namespace cnp::rpc {

// The per-stream state and logic.
template <class Request, class Response>
class StreamHandler {
 public:
  virtual ~StreamHandler() = default;
  // The answer to one request: a response to write, nothing (no answer for this request), or
  // an error that ends the stream with that status.
  // The request may be consumed.
  virtual absl::StatusOr<std::optional<Response>> Handle(Request& request) = 0;
  // After writing this response the stream ends (OK).
  virtual bool EndsStream(const Response&) { return false; }
};

template <class Service, class Request, class Response>
class StreamCall final : public Call {
 public:
  using Stream = grpc::ServerAsyncReaderWriter<Response, Request>;
  using Requester = void (Service::*)(grpc::ServerContext*, Stream*, grpc::CompletionQueue*,
                                      grpc::ServerCompletionQueue*, void*);
  // Makes the stream's handler when a stream starts, or refuses the stream with a status.
  using FactoryResult = absl::StatusOr<std::unique_ptr<StreamHandler<Request, Response>>>;
  using Factory = std::function<FactoryResult(grpc::ServerContext&)>;

  static void Listen(Service* service, grpc::ServerCompletionQueue* cq, Requester requester,
                     std::shared_ptr<const Factory> factory) {
    new StreamCall(service, cq, requester, std::move(factory));
  }

  void Proceed(bool ok) override {
    switch (state_) {
      case State::kAccepting:
        if (!ok) return delete this;
        Listen(service_, cq_, requester_, factory_);
        if (FactoryResult handler = (*factory_)(context_); handler.ok()) {
          handler_ = std::move(*handler);
        } else {
          return Finish(ToGrpcStatus(handler.status()));
        }
        return ReadNext();
      case State::kReading: {
        if (!ok) return Finish(grpc::Status::OK);  // the client closed its side
        absl::StatusOr<std::optional<Response>> answer = handler_->Handle(request_);
        if (!answer.ok()) return Finish(ToGrpcStatus(answer.status()));
        if (!answer->has_value()) return ReadNext();
        response_ = std::move(**answer);
        ending_ = handler_->EndsStream(response_);
        state_ = State::kWriting;
        return stream_.Write(response_, this);
      }
      case State::kWriting:
        if (!ok) return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
        if (ending_) return Finish(grpc::Status::OK);
        return ReadNext();
      case State::kFinishing:
        return delete this;
    }
  }

 private:
  enum class State { kAccepting, kReading, kWriting, kFinishing };

  StreamCall(Service* service, grpc::ServerCompletionQueue* cq, Requester requester,
             std::shared_ptr<const Factory> factory)
      : service_(service), cq_(cq), requester_(requester), factory_(std::move(factory)),
        stream_(&context_) {
    (service_->*requester_)(&context_, &stream_, cq_, cq_, this);
  }

  void ReadNext() {
    state_ = State::kReading;
    stream_.Read(&request_, this);
  }
  void Finish(const grpc::Status& status) {
    state_ = State::kFinishing;
    stream_.Finish(status, this);
  }

  Service* service_;
  grpc::ServerCompletionQueue* cq_;
  Requester requester_;
  std::shared_ptr<const Factory> factory_;
  grpc::ServerContext context_;
  Stream stream_;
  std::unique_ptr<StreamHandler<Request, Response>> handler_;
  Request request_;
  Response response_;
  State state_ = State::kAccepting;
  bool ending_ = false;
};

}  // namespace cnp::rpc
