// One unary RPC on a GrpcContext: each call is one coroutine that waits for a request, arms the
// next call, awaits its handler and answers.
//
// The handler runs bound to the call's cancellation (grpc_asio/call_done.h): when the client
// cancels, goes away or its deadline passes, whatever the handler awaits from the worker pool
// is cancelled at once (a queued task dropped, a running one's worker replaced).
#pragma once

#include <exception>
#include <functional>
#include <memory>

#include "asio/awaitable.hpp"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/co_spawn.hpp"
#include "asio/this_coro.hpp"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "service/common/log.h"
#include "service/grpc_asio/call_done.h"
#include "service/grpc_asio/grpc_context.h"
#include "service/grpc_asio/grpc_operations.h"
#include "service/rpc/call_executor.h"
#include "service/rpc/failed_call_log.h"
#include "service/rpc/shutdown_gate.h"
#include "service/rpc/unread_answer_watch.h"

namespace cnp::rpc {

template <class Service, class Request, class Response>
class UnaryMethod : public std::enable_shared_from_this<UnaryMethod<Service, Request, Response>> {
 public:
  using Requester = void (Service::*)(grpc::ServerContext*, Request*,
                                      grpc::ServerAsyncResponseWriter<Response>*,
                                      grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*);
  // Runs on the context's thread; the returned status finishes the call.
  using Handler =
      std::function<asio::awaitable<grpc::Status>(grpc::ServerContext&, Request&, Response&)>;

  // Starts serving calls of this method on `context` until the server shuts down. Lines logged
  // about a call name `rpc` and, through `peer_of(&server_context)`, its peer (call_executor.h).
  //
  // An answer the client has not taken `answer_timeout` after it was ready has its call
  // cancelled (unread_answer_watch.h).
  static void Listen(grpc_asio::GrpcContext& context, Service& service, ShutdownGate& gate,
                     Requester requester, const char* rpc, CallLogScope::PeerOf peer_of,
                     Handler handler, absl::Duration answer_timeout = absl::InfiniteDuration()) {
    auto method = std::make_shared<UnaryMethod>(context, service, gate, requester, rpc, peer_of,
                                                std::move(handler), answer_timeout);
    gate.AddListener(context, [method] { method->AwaitNextCall(); });
    method->AwaitNextCall();
  }

  UnaryMethod(grpc_asio::GrpcContext& context, Service& service, ShutdownGate& gate,
              Requester requester, const char* rpc, CallLogScope::PeerOf peer_of,
              Handler handler, absl::Duration answer_timeout = absl::InfiniteDuration())
      : context_(context), service_(service), gate_(gate), requester_(requester), rpc_(rpc),
        peer_of_(peer_of), handler_(std::move(handler)), answer_timeout_(answer_timeout) {}

 private:
  // What one call holds; kept alive by its coroutine's completion handler, which outlives the
  // coroutine and so the cancellation slot bound to it.
  struct Call {
    explicit Call(grpc_asio::GrpcContext& context) : done(context, server_context) {}
    grpc::ServerContext server_context;
    grpc_asio::CallDone done;
    Request request;
    Response response;
    grpc::ServerAsyncResponseWriter<Response> responder{&server_context};
  };

  void AwaitNextCall() {
    auto call = std::make_shared<Call>(context_);
    CallExecutor executor(context_.get_executor(), rpc_, &call->server_context, peer_of_);
    asio::co_spawn(executor, Serve(this->shared_from_this(), call),
                   asio::bind_cancellation_slot(call->done.slot(), [call](std::exception_ptr e) {
                     if (e) LogError("a unary call's coroutine failed unexpectedly");
                   }));
  }

  static asio::awaitable<void> Serve(std::shared_ptr<UnaryMethod> self,
                                     std::shared_ptr<Call> call) {
    // The call's cancellation reaches the handler's awaits; answering it must still work.
    co_await asio::this_coro::throw_if_cancelled(false);
    grpc_asio::GrpcContext& context = self->context_;
    if (!co_await grpc_asio::RequestCall(context, self->service_, self->requester_,
                                         call->server_context, call->request,
                                         call->responder)) {
      co_return;  // the server is shutting down; no done event comes for a call never started
    }
    self->AwaitNextCall();
    CountedCall counted(self->gate_);
    grpc::Status status;
    try {
      status = co_await self->handler_(call->server_context, call->request, call->response);
    } catch (const std::exception& e) {
      status = grpc::Status(grpc::StatusCode::INTERNAL, e.what());
    }
    if (!status.ok()) LogFailedCall(self->rpc_, status);
    UnreadAnswerWatch watch(context, call, call->server_context, call->done, self->rpc_,
                            self->peer_of_, self->answer_timeout_);
    if (status.ok()) watch.Ready(static_cast<int64_t>(call->response.Length()));
    co_await grpc_asio::FinishUnary(context, call->responder, call->response, status);
    watch.Stop();
    co_await call->done.Wait();
  }

  grpc_asio::GrpcContext& context_;
  Service& service_;
  ShutdownGate& gate_;
  const Requester requester_;
  const char* const rpc_;
  const CallLogScope::PeerOf peer_of_;
  const Handler handler_;
  const absl::Duration answer_timeout_;
};

}  // namespace cnp::rpc
