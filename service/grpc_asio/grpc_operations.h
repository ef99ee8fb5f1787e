// Awaitable gRPC async operations on a GrpcContext: each operation's tag is an object whose
// completion calls the waiting handler (resumes the awaiting coroutine) inline, on the
// context's thread, with gRPC's `ok`, through the handler's associated executor.
//
//   bool ok = co_await grpc_asio::Read(context, stream, request);
//
// Operations must be started on the context's thread (from a coroutine running on it). An
// operation started once the context's queue is shut down completes with ok=false, posted.
#pragma once

#include <utility>

#include "absl/time/time.h"
#include "asio/associated_executor.hpp"
#include "asio/async_result.hpp"
#include "asio/dispatch.hpp"
#include "asio/use_awaitable.hpp"
#include "grpc/support/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "service/grpc_asio/grpc_context.h"

namespace cnp::grpc_asio {

namespace internal {

template <class Handler>
class HandlerOperation final : public Operation {
 public:
  explicit HandlerOperation(Handler handler) : handler_(std::move(handler)) {}
  void Complete(bool ok) override {
    Handler handler = std::move(handler_);
    delete this;
    // Through the handler's own executor, as Asio has every completion invoked: inline on this
    // thread, inside whatever that executor sets around its work (a call's log scope: without
    // it, the lines a worker's quick reply logs right after a read would name no call).
    const auto executor = asio::get_associated_executor(handler);
    asio::dispatch(executor, [handler = std::move(handler), ok]() mutable {
      std::move(handler)(ok);
    });
  }

 private:
  Handler handler_;
};

}  // namespace internal

// Starts one operation: `start(tag)` hands `tag` to one gRPC async call.
template <class Start, class CompletionToken = asio::use_awaitable_t<>>
auto Perform(GrpcContext& context, Start start, CompletionToken&& token = {}) {
  return asio::async_initiate<CompletionToken, void(bool)>(
      [&context](auto handler, Start start) {
        auto* op = new internal::HandlerOperation<decltype(handler)>(std::move(handler));
        Operation* tag = op;
        if (!context.StartOperation([&] { start(static_cast<void*>(tag)); })) {
          context.Post([op] { op->Complete(false); });
        }
      },
      token, std::move(start));
}

// Waits for the next call of a unary or server-streaming method (`requester` is one of the
// generated Request<Method> members of an async service); false when the server shut down.
template <class Service, class Requester, class Request, class Responder,
          class CompletionToken = asio::use_awaitable_t<>>
auto RequestCall(GrpcContext& context, Service& service, Requester requester,
                 grpc::ServerContext& server_context, Request& request, Responder& responder,
                 CompletionToken&& token = {}) {
  return Perform(
      context,
      [&context, &service, requester, &server_context, &request, &responder](void* tag) {
        (service.*requester)(&server_context, &request, &responder, context.queue(),
                             context.queue(), tag);
      },
      std::forward<CompletionToken>(token));
}

// The same for a bidirectional (or client-streaming) method, which has no request message.
template <class Service, class Requester, class Stream,
          class CompletionToken = asio::use_awaitable_t<>>
auto RequestStream(GrpcContext& context, Service& service, Requester requester,
                   grpc::ServerContext& server_context, Stream& stream,
                   CompletionToken&& token = {}) {
  return Perform(
      context,
      [&context, &service, requester, &server_context, &stream](void* tag) {
        (service.*requester)(&server_context, &stream, context.queue(), context.queue(), tag);
      },
      std::forward<CompletionToken>(token));
}

// The next message of a stream; false when the client has closed its side or gone away.
template <class Stream, class Message, class CompletionToken = asio::use_awaitable_t<>>
auto Read(GrpcContext& context, Stream& stream, Message& message, CompletionToken&& token = {}) {
  return Perform(
      context, [&stream, &message](void* tag) { stream.Read(&message, tag); },
      std::forward<CompletionToken>(token));
}

// Writes one message; false when the call is dead (client gone, cancelled). `message` must stay
// alive until the operation completes.
template <class Stream, class Message, class CompletionToken = asio::use_awaitable_t<>>
auto Write(GrpcContext& context, Stream& stream, const Message& message,
           CompletionToken&& token = {}) {
  return Perform(
      context, [&stream, &message](void* tag) { stream.Write(message, tag); },
      std::forward<CompletionToken>(token));
}

// Ends a streaming call with `status`.
template <class Stream, class CompletionToken = asio::use_awaitable_t<>>
auto Finish(GrpcContext& context, Stream& stream, const grpc::Status& status,
            CompletionToken&& token = {}) {
  return Perform(
      context, [&stream, &status](void* tag) { stream.Finish(status, tag); },
      std::forward<CompletionToken>(token));
}

// Completes with true `after` from now, or with false once `alarm` is cancelled (Cancel(), or
// the alarm destroyed). A queue's shutdown does not end a pending alarm: the queue finishes
// shutting down only once the alarm has fired or been cancelled. A gRPC alarm fires on the
// queue itself: no timer thread, no hand-over to the context's thread. It is set on the
// monotonic clock, so the wall clock being set does not move it. `alarm` must stay alive until
// completion.
template <class CompletionToken = asio::use_awaitable_t<>>
auto SetAlarm(GrpcContext& context, grpc::Alarm& alarm, absl::Duration after,
              CompletionToken&& token = {}) {
  return Perform(
      context,
      [&context, &alarm, after](void* tag) {
        const gpr_timespec deadline =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_nanos(absl::ToInt64Nanoseconds(after), GPR_TIMESPAN));
        alarm.Set(context.queue(), deadline, tag);
      },
      std::forward<CompletionToken>(token));
}

// Answers a unary call: `response` with OK, or `status` alone when it is an error.
template <class Response, class CompletionToken = asio::use_awaitable_t<>>
auto FinishUnary(GrpcContext& context, grpc::ServerAsyncResponseWriter<Response>& responder,
                 const Response& response, const grpc::Status& status,
                 CompletionToken&& token = {}) {
  return Perform(
      context,
      [&responder, &response, &status](void* tag) {
        if (status.ok()) {
          responder.Finish(response, status, tag);
        } else {
          responder.FinishWithError(status, tag);
        }
      },
      std::forward<CompletionToken>(token));
}

}  // namespace cnp::grpc_asio
