#include "service/rpc/health_service.h"

#include <algorithm>
#include <exception>
#include <memory>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "asio/associated_cancellation_slot.hpp"
#include "asio/async_result.hpp"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/co_spawn.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"
#include "service/common/log.h"
#include "service/grpc_asio/call_done.h"
#include "service/grpc_asio/grpc_operations.h"
#include "service/rpc/request_parsing.h"
#include "service/rpc/status_mapping.h"
#include "service/rpc/unary_call.h"

namespace cnp::rpc {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

namespace {

// A health request names a service, a few dozen bytes. The health service answers without the
// token (load balancers and cnp's clients' own health checks send none), so a request of up to
// --max-call-bytes, which gRPC has received whole before any handler sees it, is refused
// before it is parsed into another copy (a security probe: a 60 MB Check took a server from 25
// to 182 MB).
constexpr size_t kMaxHealthRequestBytes = 1024;

absl::Status CheckRequestSize(grpc::ByteBuffer& bytes) {
  const size_t size = bytes.Length();
  if (size <= kMaxHealthRequestBytes) return absl::OkStatus();
  bytes.Clear();
  return absl::InvalidArgumentError(
      absl::StrCat("a health request of ", size, " bytes; one names a service, and at most ",
                   kMaxHealthRequestBytes, " bytes are read"));
}

}  // namespace

// One Watch stream. Its coroutine, the changes SetServing posts and the drain ShutdownGate
// posts all touch it on its context's thread only.
class HealthService::WatchCall final : public DrainableStream,
                                       public std::enable_shared_from_this<WatchCall> {
 public:
  explicit WatchCall(grpc_asio::GrpcContext& context)
      : context(context), done(context, server_context) {}

  // Completes once Wake() has run, or the call is cancelled.
  template <class CompletionToken = asio::use_awaitable_t<>>
  auto NextChange(CompletionToken&& token = {}) {
    return asio::async_initiate<CompletionToken, void()>(
        [this](auto handler) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          if (slot.is_connected()) {
            // Emitted inside CallDone's completion: the coroutine resumes after it, not in it.
            slot.assign([weak = weak_from_this()](asio::cancellation_type) {
              if (std::shared_ptr<WatchCall> self = weak.lock()) self->PostWake();
            });
          }
          waiter_.emplace(std::move(handler));
        },
        token);
  }

  // A change to look at: from any thread, while the call is registered (so alive).
  void PostWake() {
    context.Post([self = shared_from_this()] { self->Wake(); });
  }
  void Drain() override {
    context.Post([self = shared_from_this()] {
      self->draining = true;
      self->Wake();
    });
  }

  grpc_asio::GrpcContext& context;
  grpc::ServerContext server_context;
  grpc_asio::CallDone done;
  grpc::ByteBuffer request_bytes;
  HealthCheckRequest request;
  grpc::ServerAsyncWriter<grpc::ByteBuffer> writer{&server_context};
  bool draining = false;

 private:
  void Wake() {
    if (!waiter_.has_value()) return;  // the coroutine looks at the status before it waits again
    auto waiter = std::move(*waiter_);
    waiter_.reset();
    std::move(waiter)();
  }

  std::optional<absl::AnyInvocable<void() &&>> waiter_;
};

HealthService::HealthService(std::vector<std::string> services, WatchLimits limits)
    : services_(std::move(services)), limits_(limits) {}

std::optional<grpc::Status> HealthService::AdmitWatch(const std::string& peer) {
  absl::MutexLock lock(&mu_);
  // UNIMPLEMENTED, not RESOURCE_EXHAUSTED: a gRPC client checking health (cnp's own, given
  // several replicas) takes any other refusal for "not serving" and sends nothing more to the
  // replica, so tokenless peers holding every Watch took all replicas out of cnp's clients (a
  // security probe); UNIMPLEMENTED is "serving, stop watching" (gRFC A17). A replica that
  // drains is not serving, and says so to those it refuses too.
  const grpc::StatusCode refused =
      serving_ ? grpc::StatusCode::UNIMPLEMENTED : grpc::StatusCode::UNAVAILABLE;
  if (open_watches_ >= limits_.total) {
    return grpc::Status(refused, absl::StrCat("the server has ", limits_.total,
                        " health Watch streams open, as many as it keeps; use Check, or watch "
                        "again once one has ended"));
  }
  if (!absl::StartsWith(peer, "unix:")) {
    int& of_peer = watches_per_peer_[peer];
    if (of_peer >= limits_.per_connection) {
      return grpc::Status(refused, absl::StrCat("this connection has ", limits_.per_connection,
                                                " health Watch streams open, as many as the "
                                                "server keeps for one"));
    }
    ++of_peer;
  }
  ++open_watches_;
  return std::nullopt;
}

void HealthService::EndWatch(const std::string& peer) {
  absl::MutexLock lock(&mu_);
  --open_watches_;
  if (auto it = watches_per_peer_.find(peer); it != watches_per_peer_.end() && --it->second == 0) {
    watches_per_peer_.erase(it);
  }
}

std::optional<HealthService::ServingStatus> HealthService::StatusOf(
    const std::string& service) const {
  if (!service.empty() &&
      std::find(services_.begin(), services_.end(), service) == services_.end()) {
    return std::nullopt;
  }
  absl::MutexLock lock(&mu_);
  return serving_ ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

void HealthService::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (!frozen_) ChangeLocked(serving);
}

void HealthService::Freeze() {
  absl::MutexLock lock(&mu_);
  frozen_ = true;
  ChangeLocked(false);
}

void HealthService::ChangeLocked(bool serving) {
  if (serving_ == serving) return;
  serving_ = serving;
  for (WatchCall* watch : watches_) watch->PostWake();
}

void HealthService::Listen(grpc_asio::GrpcContext& context, ShutdownGate& gate,
                           CallLogScope::PeerOf peer_of) {
  using Check = UnaryMethod<RawHealth, grpc::ByteBuffer, grpc::ByteBuffer>;
  Check::Listen(context, service_, gate, &RawHealth::RequestCheck, "Health/Check", peer_of,
                [this](grpc::ServerContext&, grpc::ByteBuffer& bytes,
                       grpc::ByteBuffer& answer) -> asio::awaitable<grpc::Status> {
                  if (absl::Status sized = CheckRequestSize(bytes); !sized.ok()) {
                    co_return ToGrpcStatus(sized);
                  }
                  HealthCheckRequest request;
                  if (absl::Status parsed = ParseRequest(bytes, "Health/Check", request, {});
                      !parsed.ok()) {
                    co_return ToGrpcStatus(parsed);
                  }
                  const std::optional<ServingStatus> status = StatusOf(request.service());
                  if (!status.has_value()) {
                    co_return grpc::Status(
                        grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("unknown service; this server answers for \"\" (the server) "
                                     "and ", absl::StrJoin(services_, ", ")));
                  }
                  HealthCheckResponse response;
                  response.set_status(*status);
                  co_return SerializeResponse(response, answer);
                });
  AwaitNextWatch(context, gate, peer_of);
}

void HealthService::AwaitNextWatch(grpc_asio::GrpcContext& context, ShutdownGate& gate,
                                   CallLogScope::PeerOf peer_of) {
  auto call = std::make_shared<WatchCall>(context);
  // On a CallExecutor, as every call: what it logs names its RPC and peer.
  CallExecutor executor(context.get_executor(), "Health/Watch", &call->server_context, peer_of);
  asio::co_spawn(executor, ServeWatch(this, &gate, peer_of, call),
                 asio::bind_cancellation_slot(call->done.slot(), [call](std::exception_ptr e) {
                   if (e) LogError("a health Watch call's coroutine failed unexpectedly");
                 }));
}

asio::awaitable<void> HealthService::ServeWatch(HealthService* self, ShutdownGate* gate,
                                                CallLogScope::PeerOf peer_of,
                                                std::shared_ptr<WatchCall> call) {
  // A cancelled call still awaits its done event.
  co_await asio::this_coro::throw_if_cancelled(false);
  grpc_asio::GrpcContext& context = call->context;
  if (!co_await grpc_asio::RequestCall(context, self->service_, &RawHealth::RequestWatch,
                                       call->server_context, call->request_bytes, call->writer)) {
    co_return;  // the server is shutting down
  }
  self->AwaitNextWatch(context, *gate, peer_of);
  CountedCall counted(*gate);
  absl::Status parsed = CheckRequestSize(call->request_bytes);
  if (parsed.ok()) {
    parsed = ParseRequest(call->request_bytes, "Health/Watch", call->request, {});
  }
  if (!parsed.ok()) {
    const grpc::Status refused = ToGrpcStatus(parsed);
    co_await grpc_asio::Finish(context, call->writer, refused);
    co_await call->done.Wait();
    co_return;
  }
  // gRPC's peer is the connection's address and port: one connection, over TCP.
  const std::string peer = call->server_context.peer();
  if (std::optional<grpc::Status> refused = self->AdmitWatch(peer); refused.has_value()) {
    co_await grpc_asio::Finish(context, call->writer, *refused);
    co_await call->done.Wait();
    co_return;
  }
  {
    absl::MutexLock lock(&self->mu_);
    self->watches_.insert(call.get());
  }
  // Not registered: the server is already shutting down; the watcher hears the status once.
  const bool registered = gate->AddStream(call.get());
  bool alive = true;
  std::optional<ServingStatus> told;
  HealthCheckResponse response;
  grpc::ByteBuffer response_bytes;
  while (alive && !call->done.done()) {
    // Looked at before every wait, on this thread: a change posted from now on finds the wait.
    const ServingStatus now =
        self->StatusOf(call->request.service()).value_or(HealthCheckResponse::SERVICE_UNKNOWN);
    if (told != now) {
      told = now;
      response.set_status(now);
      if (grpc::Status serialized = SerializeResponse(response, response_bytes); !serialized.ok()) {
        break;
      }
      alive = co_await grpc_asio::Write(context, call->writer, response_bytes);
      continue;
    }
    if (!registered || call->draining) break;
    co_await call->NextChange();
  }
  if (registered) gate->RemoveStream(call.get());
  {
    absl::MutexLock lock(&self->mu_);
    self->watches_.erase(call.get());
  }
  self->EndWatch(peer);
  if (alive && !call->done.done()) {
    const grpc::Status ending(grpc::StatusCode::UNAVAILABLE,
                              "the server is shutting down; watch it again once it is back, or "
                              "another replica");
    co_await grpc_asio::Finish(context, call->writer, ending);
  }
  co_await call->done.Wait();
}

}  // namespace cnp::rpc
