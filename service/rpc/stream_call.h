// One bidirectional stream on the async API, in lockstep: read a request, run the stream's
// handler on this thread, write its answer (if any), read the next. Long-lived streams (the
// adapter's session, MapStream) therefore cost no thread hop per message.
//
// At shutdown (ShutdownGate::DrainStreams) a stream waiting for its client ends at once, and one
// handling a message writes that answer and then ends: the client (cnp-adapter) reconnects to
// another server and replays its session there.
#pragma once

#include <functional>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "service/rpc/call.h"
#include "service/rpc/shutdown_gate.h"
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
class StreamCall final : public Call, public DrainableStream {
 public:
  using Stream = grpc::ServerAsyncReaderWriter<Response, Request>;
  using Requester = void (Service::*)(grpc::ServerContext*, Stream*, grpc::CompletionQueue*,
                                      grpc::ServerCompletionQueue*, void*);
  // Makes the stream's handler when a stream starts, or refuses the stream with a status.
  using FactoryResult = absl::StatusOr<std::unique_ptr<StreamHandler<Request, Response>>>;
  using Factory = std::function<FactoryResult(grpc::ServerContext&)>;

  static void Listen(Service* service, grpc::ServerCompletionQueue* cq, ShutdownGate* gate,
                     Requester requester, std::shared_ptr<const Factory> factory) {
    auto* call = new StreamCall(service, cq, gate, requester, std::move(factory));
    call->Start([call] {
      (call->service_->*call->requester_)(&call->context_, &call->stream_, call->cq_, call->cq_,
                                          call);
    });
  }

  ~StreamCall() override {
    if (registered_) gate_->RemoveStream(this);
    if (begun_) gate_->CallEnds();
  }

  void Proceed(bool ok) override {
    switch (state_) {
      case State::kAccepting:
        if (!ok) return delete this;
        Listen(service_, cq_, gate_, requester_, factory_);
        gate_->CallBegins();
        begun_ = true;
        registered_ = gate_->AddStream(this);
        if (!registered_) return Finish(ShuttingDown());
        if (FactoryResult handler = (*factory_)(context_); handler.ok()) {
          handler_ = std::move(*handler);
        } else {
          return Finish(ToGrpcStatus(handler.status()));
        }
        return ReadNext();
      case State::kReading: {
        {
          absl::MutexLock lock(&mu_);
          waiting_for_client_ = false;
        }
        if (!ok) return Finish(grpc::Status::OK);  // the client closed its side
        absl::StatusOr<std::optional<Response>> answer = handler_->Handle(request_);
        if (!answer.ok()) return Finish(WithRetryAdvice(ToGrpcStatus(answer.status()), context_));
        if (!answer->has_value()) return ReadNext();
        response_ = std::move(**answer);
        ending_ = handler_->EndsStream(response_);
        state_ = State::kWriting;
        return Start([this] { stream_.Write(response_, this); });
      }
      case State::kWriting:
        if (!ok) return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
        if (ending_) return Finish(grpc::Status::OK);
        return ReadNext();
      case State::kFinishing:
        return delete this;
    }
  }

  void Drain() override {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    // The pending read completes with ok=false, which finishes the stream.
    if (waiting_for_client_) context_.TryCancel();
  }

 private:
  enum class State { kAccepting, kReading, kWriting, kFinishing };

  StreamCall(Service* service, grpc::ServerCompletionQueue* cq, ShutdownGate* gate,
             Requester requester, std::shared_ptr<const Factory> factory)
      : service_(service), cq_(cq), gate_(gate), requester_(requester),
        factory_(std::move(factory)), stream_(&context_) {}

  static grpc::Status ShuttingDown() {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is shutting down; reconnect to another one");
  }

  // Starts one operation, or deletes this call when the server no longer takes any.
  template <class Op>
  void Start(Op&& op) {
    if (!gate_->Open(std::forward<Op>(op))) delete this;
  }

  void ReadNext() {
    bool draining;
    {
      absl::MutexLock lock(&mu_);
      draining = draining_;
      waiting_for_client_ = !draining;
    }
    if (draining) return Finish(ShuttingDown());
    state_ = State::kReading;
    Start([this] { stream_.Read(&request_, this); });
  }
  void Finish(const grpc::Status& status) {
    state_ = State::kFinishing;
    Start([&] { stream_.Finish(status, this); });
  }

  Service* service_;
  grpc::ServerCompletionQueue* cq_;
  ShutdownGate* gate_;
  Requester requester_;
  std::shared_ptr<const Factory> factory_;
  grpc::ServerContext context_;
  Stream stream_;
  std::unique_ptr<StreamHandler<Request, Response>> handler_;
  Request request_;
  Response response_;
  State state_ = State::kAccepting;
  bool ending_ = false;
  bool registered_ = false;
  bool begun_ = false;
  absl::Mutex mu_;  // Drain() comes from the thread that shuts the server down
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool waiting_for_client_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace cnp::rpc
