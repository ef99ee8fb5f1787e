// One bidirectional stream on a GrpcContext, in lockstep, as one coroutine: read a request,
// await the stream's handler, write its answer (if any), read the next. Long-lived streams (the
// adapter's session, MapStream) cost no thread hop per message.
//
// The handler's awaits are bound to the stream's cancellation: a client that cancels or goes
// away mid-message cancels the work it was waiting for.
//
// At shutdown (ShutdownGate::DrainStreams) a stream waiting for its client ends at once, and one
// handling a message writes that answer and then ends: the client (cnp-adapter) reconnects to
// another server and replays its session there. Either way the stream ends with a status sent
// after its last answer, never by cancelling it: a cancel drops an answer written just before
// that the transport has not yet sent.
//
// What a stream holds is bounded as a unary call's is (StreamLimits): each request, while it
// is handled, and each answer, until gRPC reports it written (flow control holds a write back
// while the client reads nothing), is counted against the server's
// CallMemory (a message past the budget ends the stream RESOURCE_EXHAUSTED; one under 16 KiB is
// not counted), and an answer not taken within --call-timeout cancels the stream
// (unread_answer_watch.h). Without that, a client that opened many streams and read nothing
// made the server hold every answer for good.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/co_spawn.hpp"
#include "asio/this_coro.hpp"
#include "grpcpp/grpcpp.h"
#include "service/calls/answer_growth.h"
#include "service/common/log.h"
#include "service/grpc_asio/call_done.h"
#include "service/grpc_asio/grpc_context.h"
#include "service/grpc_asio/grpc_operations.h"
#include "service/metrics/service_metrics.h"
#include "service/rpc/call_executor.h"
#include "service/rpc/call_memory.h"
#include "service/rpc/shutdown_gate.h"
#include "service/rpc/status_mapping.h"
#include "service/rpc/stream_heartbeat.h"
#include "service/rpc/unread_answer_watch.h"

namespace cnp::rpc {

// The per-stream state and logic.
template <class Request, class Response>
class StreamHandler {
 public:
  virtual ~StreamHandler() = default;
  // The answer to one request: a response to write, nothing (no answer for this request), or
  // an error that ends the stream with that status. The request may be consumed.
  virtual asio::awaitable<absl::StatusOr<std::optional<Response>>> Handle(Request& request) = 0;
  // Handle, for a handler that builds its answer in parts (a MapStream message's Map): `grown`
  // is told the answer's bytes as it grows (calls::AnswerGrowth), so that the stream counts
  // them before the answer is whole. Others answer at once, and need not override it.
  virtual asio::awaitable<absl::StatusOr<std::optional<Response>>> HandleGrowing(
      Request& request, const calls::AnswerGrowth& /*grown*/) {
    return Handle(request);
  }
  // After writing this response the stream ends (OK).
  virtual bool EndsStream(const Response&) { return false; }
  // While Handle works on a message, the stream writes Heartbeat() whenever it has been
  // silent this long (stream_heartbeat.h). Zero: never. Asked once, when the stream starts.
  virtual absl::Duration HeartbeatInterval() const { return absl::ZeroDuration(); }
  virtual Response Heartbeat() const { return Response(); }
  // Written before an answer of `answer_bytes`, if set: while the answer crosses a slow link, a
  // client that holds the stream's silence against it (heartbeats) learns that it is coming.
  virtual std::optional<Response> Forewarning(int64_t answer_bytes) const { return std::nullopt; }
  // With heartbeats: how the handler writes responses ahead of its answer while Handle works
  // (a CouchDB function's log lines, which CouchDB must get as they are made). Given once,
  // before the first Handle; call it on the stream's thread. It returns false, writing nothing,
  // when the stream holds too much its client has not taken: the handler keeps what it could
  // not write for its answer.
  using EarlyWriter = std::function<bool(Response)>;
  virtual void WriteEarlyWith(EarlyWriter writer) { (void)writer; }
  // A command spans several requests and is between two of them (a list between its rows):
  // a stream asked to end (the server stopping) waits for the client's next request rather
  // than end here, and ends at the first wait without one, or when --shutdown-grace does.
  virtual bool HoldsCommandOpen() const { return false; }
  // Awaited once the stream's conversation is over, before the handler is destroyed (a
  // destructor cannot await).
  virtual asio::awaitable<void> Close() { co_return; }
};

// What each stream of a method may hold (see above). No memory: nothing counted.
struct StreamLimits {
  CallMemory* memory = nullptr;
  absl::Duration answer_timeout = absl::InfiniteDuration();
};

template <class Service, class Request, class Response>
class StreamMethod
    : public std::enable_shared_from_this<StreamMethod<Service, Request, Response>> {
 public:
  using Stream = grpc::ServerAsyncReaderWriter<Response, Request>;
  using Heartbeat = StreamHeartbeat<Stream, Response>;
  using Requester = void (Service::*)(grpc::ServerContext*, Stream*, grpc::CompletionQueue*,
                                      grpc::ServerCompletionQueue*, void*);
  // Makes the stream's handler when a stream starts, or refuses the stream with a status.
  using FactoryResult = absl::StatusOr<std::unique_ptr<StreamHandler<Request, Response>>>;
  using Factory = std::function<FactoryResult(grpc::ServerContext&)>;

  // `rpc` and `peer_of` name the stream in the log lines of its work (CallLogScope), as for a
  // unary call.
  static void Listen(grpc_asio::GrpcContext& context, Service& service, ShutdownGate& gate,
                     Requester requester, const char* rpc, CallLogScope::PeerOf peer_of,
                     StreamLimits limits, Factory factory) {
    metrics::DeclareRpc(rpc);
    auto method = std::make_shared<StreamMethod>(context, service, gate, requester, rpc,
                                                 peer_of, limits, std::move(factory));
    gate.AddListener(context, [method] { method->AwaitNextStream(); });
    method->AwaitNextStream();
  }

  StreamMethod(grpc_asio::GrpcContext& context, Service& service, ShutdownGate& gate,
               Requester requester, const char* rpc, CallLogScope::PeerOf peer_of,
               StreamLimits limits, Factory factory)
      : context_(context), service_(service), gate_(gate), requester_(requester), rpc_(rpc),
        peer_of_(peer_of), limits_(limits), factory_(std::move(factory)) {}

 private:
  struct Call final : DrainableStream, std::enable_shared_from_this<Call> {
    explicit Call(grpc_asio::GrpcContext& context)
        : context(context), done(context, server_context) {}

    void Drain() override {
      absl::MutexLock lock(&mu);
      draining = true;
      if (waiting_for_client && !command_open) {
        context.Post([self = this->shared_from_this()] { self->FinishWhileWaiting(); });
      }
    }
    // Before reading: false when the stream is to end instead. `command_open`: the handler's
    // HoldsCommandOpen(), whose next request a drain waits for.
    bool BeginWaiting(bool command_open) {
      absl::MutexLock lock(&mu);
      this->command_open = command_open;
      waiting_for_client = !draining || command_open;
      return waiting_for_client;
    }
    // After the read: false when the drain has finished the stream meanwhile (what was read,
    // if anything, goes unanswered; the client replays it elsewhere).
    bool EndWaiting() {
      absl::MutexLock lock(&mu);
      waiting_for_client = false;
      return !finished_by_drain;
    }
    bool FinishedByDrain() {
      absl::MutexLock lock(&mu);
      return finished_by_drain;
    }

    grpc::ServerContext server_context;
    grpc_asio::GrpcContext& context;
    grpc_asio::CallDone done;
    Stream stream{&server_context};
    absl::Mutex mu;  // Drain() comes from the thread that shuts the server down
    bool draining ABSL_GUARDED_BY(mu) = false;
    bool waiting_for_client ABSL_GUARDED_BY(mu) = false;
    bool command_open ABSL_GUARDED_BY(mu) = false;  // as of the last BeginWaiting
    bool finished_by_drain ABSL_GUARDED_BY(mu) = false;

   private:
    // On the context's thread. gRPC allows Finish with a read pending, and completes that read
    // with ok=false: the stream's coroutine then ends without finishing it again. The status
    // goes out after every answer already written.
    void FinishWhileWaiting() {
      {
        absl::MutexLock lock(&mu);
        // A message came first (answered, then ended), or the wait is one a drain lets be.
        if (!waiting_for_client || command_open) return;
        finished_by_drain = true;
      }
      // The Call outlives the operation: the coroutine may be gone before it completes.
      grpc_asio::Finish(context, stream, shutting_down_, [self = this->shared_from_this()](bool) {});
    }
    const grpc::Status shutting_down_ = ShuttingDown();
  };

  // Registered for draining while it lives.
  class Registration {
   public:
    Registration(ShutdownGate& gate, Call& call) : gate_(gate), call_(call) {
      registered_ = gate.AddStream(&call);
    }
    ~Registration() {
      if (registered_) gate_.RemoveStream(&call_);
    }
    bool registered() const { return registered_; }

   private:
    ShutdownGate& gate_;
    Call& call_;
    bool registered_;
  };

  static grpc::Status ShuttingDown() {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is shutting down; reconnect to another one");
  }

  void AwaitNextStream() {
    auto call = std::make_shared<Call>(context_);
    CallExecutor executor(context_.get_executor(), rpc_, &call->server_context, peer_of_);
    asio::co_spawn(executor, Serve(this->shared_from_this(), call),
                   asio::bind_cancellation_slot(call->done.slot(), [call](std::exception_ptr e) {
                     if (e) LogError("a stream's coroutine failed unexpectedly");
                   }));
  }

  static asio::awaitable<void> Serve(std::shared_ptr<StreamMethod> self,
                                     std::shared_ptr<Call> call) {
    co_await asio::this_coro::throw_if_cancelled(false);
    grpc_asio::GrpcContext& context = self->context_;
    if (!co_await grpc_asio::RequestStream(context, self->service_, self->requester_,
                                           call->server_context, call->stream)) {
      co_return;
    }
    self->AwaitNextStream();
    CountedCall counted(self->gate_);
    grpc::Status status = ShuttingDown();
    {
      Registration registration(self->gate_, *call);
      if (registration.registered()) {
        try {
          status = co_await self->Converse(call);
        } catch (const std::exception& e) {
          status = grpc::Status(grpc::StatusCode::INTERNAL, e.what());
        }
      }
    }
    if (!call->FinishedByDrain()) co_await grpc_asio::Finish(context, call->stream, status);
    co_await call->done.Wait();
  }

  asio::awaitable<grpc::Status> Converse(const std::shared_ptr<Call>& call) {
    FactoryResult made = factory_(call->server_context);
    if (!made.ok()) co_return ToGrpcStatus(made.status());
    std::unique_ptr<StreamHandler<Request, Response>> handler = std::move(*made);
    std::shared_ptr<Heartbeat> heartbeat;
    if (const absl::Duration every = handler->HeartbeatInterval(); every > absl::ZeroDuration()) {
      heartbeat =
          std::make_shared<Heartbeat>(context_, call->stream, call, handler->Heartbeat(), every);
      handler->WriteEarlyWith([weak = std::weak_ptr<Heartbeat>(heartbeat)](Response early) {
        const std::shared_ptr<Heartbeat> writer = weak.lock();
        return writer != nullptr && writer->WriteEarly(std::move(early));
      });
    }
    // A handler that throws still has its heartbeat stopped (its alarm would keep the call, and
    // a shutdown, waiting up to an interval) and is closed; the exception then ends the call.
    std::exception_ptr failed;
    grpc::Status status;
    try {
      status = co_await Exchange(call, *handler, heartbeat.get());
    } catch (...) {
      failed = std::current_exception();
    }
    if (heartbeat != nullptr) heartbeat->Stop();
    co_await handler->Close();
    if (failed) std::rethrow_exception(failed);
    co_return status;
  }

  // Requests and answers, in lockstep, until the stream ends.
  asio::awaitable<grpc::Status> Exchange(const std::shared_ptr<Call>& owner,
                                         StreamHandler<Request, Response>& handler,
                                         Heartbeat* heartbeat) {
    Call& call = *owner;
    UnreadAnswerWatch watch(context_, owner, call.server_context, call.done, rpc_, peer_of_,
                            limits_.answer_timeout);
    Request request;
    for (;;) {
      if (!call.BeginWaiting(handler.HoldsCommandOpen())) co_return ShuttingDown();
      const bool read = co_await grpc_asio::Read(context_, call.stream, request);
      if (!call.EndWaiting()) co_return ShuttingDown();  // finished already, by the drain
      if (!read) co_return grpc::Status::OK;  // the client closed its side
      // The request's charge, which becomes its answer's as the answer grows.
      std::optional<CallMemory::Charge> held = Hold(request, kRequestCopies);
      if (!held.has_value()) {
        const int64_t bytes = kRequestCopies * MessageBytes(request);
        request.Clear();
        co_return Refused("its request", bytes);
      }
      if (heartbeat != nullptr) heartbeat->Busy();
      std::exception_ptr failed;
      absl::StatusOr<std::optional<Response>> answer = std::nullopt;
      try {
        const calls::AnswerGrowth grown = Growth(*held);
        answer = co_await handler.HandleGrowing(request, grown);
      } catch (...) {
        failed = std::current_exception();
      }
      if (heartbeat != nullptr) heartbeat->Idle();
      // From here the stream waits for its client to take what it was sent: a heartbeat in
      // flight, then the answer.
      const bool answering = !failed && answer.ok() && answer->has_value();
      // Nothing else is written, and the stream does not end, while a heartbeat is in flight.
      if (heartbeat != nullptr && heartbeat->writing()) {
        watch.Ready(0);
        co_await heartbeat->WriteDone();
        watch.Taken();
      }
      if (failed) std::rethrow_exception(failed);
      if (!answer.ok()) {
        co_return WithStatusTrailers(ToGrpcStatus(answer.status()), call.server_context);
      }
      if (!answering) {
        held.reset();
        continue;
      }
      const Response response = std::move(**answer);
      // The request's charge becomes the answer's: it may shrink, or need more room.
      if (!held->Resize(Counted(response, 1))) {
        co_return Refused("its answer", MessageBytes(response));
      }
      const bool ending = handler.EndsStream(response);
      if (std::optional<Response> notice = handler.Forewarning(MessageBytes(response))) {
        if (!co_await WriteWatched(call, watch, *notice)) co_return ClientWentAway();
      }
      if (!co_await WriteWatched(call, watch, response)) co_return ClientWentAway();
      if (ending) co_return grpc::Status::OK;
    }
  }

  // Writes `message` with the watch told it waits to be read; false when the client went away.
  asio::awaitable<bool> WriteWatched(Call& call, UnreadAnswerWatch& watch,
                                     const Response& message) {
    watch.Ready(MessageBytes(message));
    const bool written = co_await grpc_asio::Write(context_, call.stream, message);
    if (written) watch.Taken();
    co_return written;
  }

  static grpc::Status ClientWentAway() {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
  }

  static int64_t MessageBytes(const grpc::ByteBuffer& message) {
    return static_cast<int64_t>(message.Length());
  }

  // `message` counted `copies` times against the stream's memory; nothing when that would
  // pass its budget. A message under kUncountedMessageBytes is not counted: what it holds is
  // about what an open stream costs anyway (README: 15 KB each, bounded by the connection
  // limits), and refusing it would end a session, which its adapter then replays on a new
  // stream, adding work just when memory is short (a burst of unary Maps would otherwise end
  // the sessions of CouchDB's ordinary documents).
  static constexpr int64_t kUncountedMessageBytes = 16 << 10;
  int64_t Counted(const grpc::ByteBuffer& message, int64_t copies) const {
    if (limits_.memory == nullptr || MessageBytes(message) < kUncountedMessageBytes) return 0;
    return copies * MessageBytes(message);
  }
  std::optional<CallMemory::Charge> Hold(const grpc::ByteBuffer& message, int64_t copies) {
    if (limits_.memory == nullptr) return CallMemory::Charge();
    // A charge of nothing still belongs to the budget: an answer that grows past what was
    // counted of its request (a small message naming many functions) is counted as it grows.
    return limits_.memory->TryCharge(Counted(message, copies));
  }

  // What `held`, a request's charge, becomes while its answer grows: the request's bytes once
  // and the answer, or the first charge if that is more (as a unary call's, rpc_server.cc).
  // An answer under kUncountedMessageBytes is not counted, as a whole one is not.
  calls::AnswerGrowth Growth(CallMemory::Charge& held) {
    if (limits_.memory == nullptr) return nullptr;
    const int64_t request_charge = held.bytes();
    return [this, &held, request_charge](int64_t answer_bytes) -> absl::Status {
      if (answer_bytes < kUncountedMessageBytes) answer_bytes = 0;
      const int64_t bytes =
          std::max(request_charge, request_charge / kRequestCopies + answer_bytes);
      if (held.Resize(bytes)) return absl::OkStatus();
      metrics::CallMemoryRefused(rpc_);
      return absl::ResourceExhaustedError(
          limits_.memory->RefusalMessage("its answer, as it was built,", answer_bytes));
    };
  }

  grpc::Status Refused(const char* what, int64_t bytes) {
    metrics::CallMemoryRefused(rpc_);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        limits_.memory->RefusalMessage(what, bytes));
  }

  grpc_asio::GrpcContext& context_;
  Service& service_;
  ShutdownGate& gate_;
  const Requester requester_;
  const char* const rpc_;
  const CallLogScope::PeerOf peer_of_;
  const StreamLimits limits_;
  const Factory factory_;
};

}  // namespace cnp::rpc
