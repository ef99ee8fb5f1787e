// One server-streaming RPC (Upload) on a GrpcContext. Its handler is synchronous code that may
// take hours (a staged index build) and blocks on HTTP, so it runs on an executor the server
// owns for such work (`blocking`, an asio::thread_pool joined at shutdown) while the call's
// coroutine awaits it; each message it emits is written by the context's thread, the handler
// waiting for that write.
//
// Before a call gets near that executor it is admitted on the context's thread (`admit`: the
// token check), its request parsed (request_parsing.h: it arrives as bytes, so that a peer
// without the token is told so whatever it sent, and one that sent no valid request is told
// INVALID_ARGUMENT) and it takes a slot of `limit` (the calls running or waiting for a
// blocking thread): a call refused by any of these is answered at once, never queued behind
// the uploads running. Then `accepted` runs (the access log), still on the context's thread.
//
// When the call is cancelled (the client cancels or goes away, its deadline passes, the server
// shuts down) the handler's std::stop_token is told, and emitting fails from then on: the
// handler is expected to stop between its steps. A message the client does not take (it reads
// nothing, and HTTP/2's flow control stops the write) is waited for at most `write_timeout`:
// then, or when the call's stop comes first, the call is cancelled, which ends the write, and
// the handler's thread is free again. Before, two Uploads that never read held both upload
// threads for as long as their connections lasted, and every other Upload waited behind them.
// A call cancelled while it still waits for a thread is answered at once and gives its slot
// back: its handler never runs.
//
// Its request is counted against the server's CallMemory (call_memory.h) from its admission
// until the handler returns: an Upload may wait and run for hours holding it, and the slots
// alone let ten of them hold ten times --max-call-bytes. One past the budget is refused
// RESOURCE_EXHAUSTED naming --max-grpc-memory before it takes a slot.
#pragma once

#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stop_token>

#include "absl/time/time.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/co_spawn.hpp"
#include "asio/this_coro.hpp"
#include "grpcpp/grpcpp.h"
#include "service/common/log.h"
#include "service/common/run_blocking.h"
#include "service/grpc_asio/call_done.h"
#include "service/grpc_asio/grpc_context.h"
#include "service/grpc_asio/grpc_operations.h"
#include "service/metrics/service_metrics.h"
#include "service/rpc/blocking_call_limit.h"
#include "service/rpc/call_memory.h"
#include "service/rpc/request_parsing.h"
#include "service/rpc/shutdown_gate.h"
#include "service/rpc/status_mapping.h"

namespace cnp::rpc {

template <class Service, class Request, class Response>
class ServerStreamMethod
    : public std::enable_shared_from_this<ServerStreamMethod<Service, Request, Response>> {
 public:
  using Writer = grpc::ServerAsyncWriter<grpc::ByteBuffer>;
  using Requester = void (Service::*)(grpc::ServerContext*, grpc::ByteBuffer*, Writer*,
                                      grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*);
  // Sends one message; false when the call is over (client gone, cancelled).
  using Emit = std::function<bool(const Response&)>;
  using Handler = std::function<grpc::Status(grpc::ServerContext&, const Request&, const Emit&,
                                             std::stop_token)>;
  // Runs on the context's thread as the call arrives, before its request is parsed: OK lets it
  // go on, anything else is its answer. Must not block.
  using Admit = std::function<grpc::Status(grpc::ServerContext&)>;
  // Runs on the context's thread once the call holds its slot, before it waits for a thread.
  using Accepted = std::function<void(grpc::ServerContext&, const Request&)>;

  // `rpc` names the method in the answer to a request that does not parse; `caps`
  // (RequestFieldCaps, request_parsing.h) outlive the method.
  static void Listen(grpc_asio::GrpcContext& context, Service& service, ShutdownGate& gate,
                     Requester requester, const char* rpc,
                     absl::Span<const RepeatedFieldCap> caps, Admit admit,
                     BlockingCallLimit& limit, CallMemory& memory, Accepted accepted,
                     asio::any_io_executor blocking, absl::Duration write_timeout,
                     Handler handler) {
    metrics::DeclareRpc(rpc);
    auto method = std::make_shared<ServerStreamMethod>(
        context, service, gate, requester, rpc, caps, std::move(admit), limit, memory,
        std::move(accepted), std::move(blocking), write_timeout, std::move(handler));
    gate.AddListener(context, [method] { method->AwaitNextCall(); });
    method->AwaitNextCall();
  }

  ServerStreamMethod(grpc_asio::GrpcContext& context, Service& service, ShutdownGate& gate,
                     Requester requester, const char* rpc,
                     absl::Span<const RepeatedFieldCap> caps, Admit admit,
                     BlockingCallLimit& limit, CallMemory& memory, Accepted accepted,
                     asio::any_io_executor blocking, absl::Duration write_timeout,
                     Handler handler)
      : context_(context), service_(service), gate_(gate), requester_(requester), rpc_(rpc),
        caps_(caps), admit_(std::move(admit)), limit_(limit), memory_(memory),
        accepted_(std::move(accepted)), blocking_(std::move(blocking)),
        write_timeout_(write_timeout), handler_(std::move(handler)) {}

 private:
  struct Call {
    explicit Call(grpc_asio::GrpcContext& context) : done(context, server_context) {}
    grpc::ServerContext server_context;
    grpc_asio::CallDone done;
    grpc::ByteBuffer bytes;  // the request as it came
    Request request;
    Writer writer{&server_context};
  };

  void AwaitNextCall() {
    auto call = std::make_shared<Call>(context_);
    asio::co_spawn(context_, Serve(this->shared_from_this(), call),
                   asio::bind_cancellation_slot(call->done.slot(), [call](std::exception_ptr e) {
                     if (e) LogError("a server-streaming call's coroutine failed unexpectedly");
                   }));
  }

  static asio::awaitable<void> Serve(std::shared_ptr<ServerStreamMethod> self,
                                     std::shared_ptr<Call> call) {
    co_await asio::this_coro::throw_if_cancelled(false);
    grpc_asio::GrpcContext& context = self->context_;
    if (!co_await grpc_asio::RequestCall(context, self->service_, self->requester_,
                                         call->server_context, call->bytes, call->writer)) {
      co_return;
    }
    self->AwaitNextCall();
    CountedCall counted(self->gate_);
    // The handler's thread encodes each message and waits for its write, which only this
    // context's thread may start. (A write posted once the context's loop has ended is dropped
    // with its promise: the handler then sees a broken promise, as good as a client gone,
    // rather than waiting.)
    // A write not taken within write_timeout, or still waiting when the call's stop comes,
    // cancels the call (on the context's thread), which completes the write; the bytes live
    // until the write's completion, which may come after this thread has moved on.
    const absl::Duration write_timeout = self->write_timeout_;
    const char* const rpc = self->rpc_;
    auto write = [&context, call, write_timeout, rpc](const Response& response,
                                                      std::stop_token stop) {
      if (stop.stop_requested()) return false;
      auto bytes = std::make_shared<grpc::ByteBuffer>();
      if (grpc::Status encoded = SerializeResponse(response, *bytes); !encoded.ok()) {
        LogError("cannot encode a message of a server stream: ", encoded.error_message());
        return false;
      }
      auto written = std::make_shared<std::promise<bool>>();
      std::future<bool> done = written->get_future();
      context.Post([&context, call, bytes, written] {
        grpc_asio::Write(context, call->writer, *bytes,
                         [written, bytes](bool ok) { written->set_value(ok); });
      });
      auto cancel = [&context, call] {
        context.Post([call] { call->server_context.TryCancel(); });
      };
      {
        std::stop_callback cancel_on_stop(stop, cancel);
        if (write_timeout != absl::InfiniteDuration() &&
            done.wait_for(absl::ToChronoNanoseconds(write_timeout)) ==
                std::future_status::timeout) {
          LogWarning("the client of a ", rpc, " call took no message for ",
                     absl::FormatDuration(write_timeout),
                     " (--call-timeout): cancelling the call, which frees its thread");
          cancel();
        }
        try {
          return done.get();
        } catch (const std::future_error&) {
          return false;
        }
      }
    };
    grpc::Status status = self->admit_(call->server_context);
    // The bytes as they came and, once parsed, the request: the bytes are let go of then.
    const auto request_bytes = static_cast<int64_t>(call->bytes.Length());
    std::optional<CallMemory::Charge> held_bytes;
    std::optional<CallMemory::Charge> held_request;
    if (status.ok()) {
      held_bytes = self->memory_.TryCharge(request_bytes);
      held_request = self->memory_.TryCharge(request_bytes);
      if (!held_bytes.has_value() || !held_request.has_value()) {
        call->bytes.Clear();
        metrics::CallMemoryRefused(self->rpc_);
        status = grpc::Status(
            grpc::StatusCode::RESOURCE_EXHAUSTED,
            self->memory_.RefusalMessage("its request", kRequestCopies * request_bytes));
      }
    }
    if (status.ok()) {
      status = ToGrpcStatus(ParseRequest(call->bytes, self->rpc_, call->request, self->caps_));
      call->bytes.Clear();
      held_bytes.reset();
    }
    if (status.ok()) {
      // Held until the handler has returned, or the call was cancelled before a thread took
      // it up: the calls running and waiting stay bounded, and one that is gone stops counting
      // at once rather than when the uploads ahead of it end (a staged build takes hours).
      std::optional<BlockingCallLimit::Slot> slot = self->limit_.TryEnter();
      if (!slot) {
        status = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, self->limit_.refusal());
      } else {
        self->accepted_(call->server_context, call->request);
        // Named, not temporaries beside the co_await: GCC 12 mishandles those.
        grpc::Status if_cancelled(
            grpc::StatusCode::CANCELLED,
            "the call was cancelled while it waited for a thread; nothing was done");
        auto run = [&](std::stop_token stop) {
          bool gone = false;
          Emit emit = [&](const Response& response) {
            gone = gone || !write(response, stop);
            return !gone;
          };
          try {
            return self->handler_(call->server_context, call->request, emit, stop);
          } catch (const std::exception& e) {
            return grpc::Status(grpc::StatusCode::INTERNAL, e.what());
          }
        };
        status = co_await RunBlocking(self->blocking_, std::move(run), std::move(if_cancelled));
      }
    }
    co_await grpc_asio::Finish(context, call->writer, status);
    co_await call->done.Wait();
  }

  grpc_asio::GrpcContext& context_;
  Service& service_;
  ShutdownGate& gate_;
  const Requester requester_;
  const char* const rpc_;
  const absl::Span<const RepeatedFieldCap> caps_;
  const Admit admit_;
  BlockingCallLimit& limit_;
  CallMemory& memory_;
  const Accepted accepted_;
  const asio::any_io_executor blocking_;
  const absl::Duration write_timeout_;  // see the top of the file
  const Handler handler_;
};

}  // namespace cnp::rpc
