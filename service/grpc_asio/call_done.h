// When a server call is done, and whether it was cancelled: gRPC's AsyncNotifyWhenDone event
// on a GrpcContext. A call is cancelled when its client cancels it, goes away, or its deadline
// passes (gRPC cancels it then), and also when the server cancels it (TryCancel, shutdown).
//
// While the call's handler runs, a cancellation is emitted as terminal cancellation into
// `slot()`: spawn the handler coroutine with asio::bind_cancellation_slot(done.slot(), ...) and
// every operation it awaits that honours cancellation (the worker pool's) stops at once.
//
// Lifetime: construct before requesting the call (gRPC wants the tag registered first). Once the
// call has been accepted, the event always comes, after the call's last operation: the handler
// must await Wait() before the ServerContext and this object go away. When the request itself
// failed (server shut down), no event ever comes.
#pragma once

#include <optional>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "asio/async_result.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/use_awaitable.hpp"
#include "grpcpp/server_context.h"
#include "service/grpc_asio/grpc_context.h"

namespace cnp::grpc_asio {

class CallDone final : public Operation {
 public:
  CallDone(GrpcContext& context, grpc::ServerContext& server_context)
      : context_(context), server_context_(server_context) {
    server_context.AsyncNotifyWhenDone(static_cast<Operation*>(this));
  }
  CallDone(const CallDone&) = delete;
  CallDone& operator=(const CallDone&) = delete;

  // Where the cancellation of the call is emitted.
  asio::cancellation_slot slot() { return signal_.slot(); }

  bool done() const { return done_; }
  // Only meaningful once done().
  bool cancelled() const { return cancelled_; }

  // Completes (with no arguments) once the done event has come; at once (posted) if it has.
  template <class CompletionToken = asio::use_awaitable_t<>>
  auto Wait(CompletionToken&& token = {}) {
    return asio::async_initiate<CompletionToken, void()>(
        [this](auto handler) {
          if (done_) {
            context_.Post(std::move(handler));
          } else {
            waiter_.emplace(std::move(handler));
          }
        },
        token);
  }

  void Complete(bool) override {
    done_ = true;
    cancelled_ = server_context_.IsCancelled();
    // Whoever waits in Wait() is not cancelled by this (it waits for exactly this event).
    if (cancelled_) signal_.emit(asio::cancellation_type::terminal);
    if (waiter_.has_value()) {
      auto waiter = std::move(*waiter_);
      waiter_.reset();
      std::move(waiter)();
    }
  }

 private:
  GrpcContext& context_;
  grpc::ServerContext& server_context_;
  asio::cancellation_signal signal_;
  std::optional<absl::AnyInvocable<void() &&>> waiter_;
  bool done_ = false;
  bool cancelled_ = false;
};

}  // namespace cnp::grpc_asio
