// An answer its client does not take. gRPC holds an answer until the client's HTTP/2 window lets
// it out, for as long as the call stays open: a client that never opens its window (or stops
// reading a stream) would make the server hold every answer it built. So from the moment an
// answer is ready the call has `timeout` (--call-timeout) to take it; past that the call is
// cancelled, which frees the answer, a warning names the call and its peer, and
// cnp_unread_answer_cancels_total{rpc} counts it.
//
//   UnreadAnswerWatch watch = UnreadAnswerWatch::Start(context, call, server_context, done,
//                                                      rpc, peer_of, timeout);
//   co_await Write(...);   // or FinishUnary
//   watch.Taken();         // (or when `watch` is destroyed)
//
// Everything runs on the call's GrpcContext thread.
#pragma once

#include <memory>
#include <utility>

#include "absl/time/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "service/common/log.h"
#include "service/grpc_asio/call_done.h"
#include "service/grpc_asio/grpc_context.h"
#include "service/grpc_asio/grpc_operations.h"
#include "service/metrics/service_metrics.h"

namespace cnp::rpc {

class UnreadAnswerWatch {
 public:
  UnreadAnswerWatch() = default;  // watches nothing
  UnreadAnswerWatch(UnreadAnswerWatch&&) = default;
  UnreadAnswerWatch& operator=(UnreadAnswerWatch&& other) noexcept {
    if (this != &other) {
      Taken();
      armed_ = std::move(other.armed_);
    }
    return *this;
  }
  ~UnreadAnswerWatch() { Taken(); }

  // A watch of nothing when `timeout` is infinite. `call` owns `server_context` and `done`, and
  // is kept until the alarm has come back; `done` tells a call that has ended (the alarm may
  // fire after it, and must not cancel what is no longer there). The peer is asked for only
  // when the warning is written.
  static UnreadAnswerWatch Start(grpc_asio::GrpcContext& context, std::shared_ptr<const void> call,
                                 grpc::ServerContext& server_context,
                                 const grpc_asio::CallDone& done, const char* rpc,
                                 CallLogScope::PeerOf peer_of, absl::Duration timeout) {
    UnreadAnswerWatch watch;
    if (timeout >= absl::InfiniteDuration()) return watch;
    watch.armed_ = std::make_shared<Armed>(std::move(call), server_context, done, rpc, peer_of,
                                           timeout);
    grpc_asio::SetAlarm(context, watch.armed_->alarm, timeout,
                        [armed = watch.armed_](bool fired) { armed->OnAlarm(fired); });
    return watch;
  }

  // The answer left (or the call ended): the alarm is called off.
  void Taken() {
    if (armed_ == nullptr) return;
    armed_->taken = true;
    armed_->alarm.Cancel();
    armed_.reset();
  }

 private:
  struct Armed {
    Armed(std::shared_ptr<const void> call, grpc::ServerContext& server_context,
          const grpc_asio::CallDone& done, const char* rpc, CallLogScope::PeerOf peer_of,
          absl::Duration timeout)
        : call(std::move(call)), server_context(server_context), done(done), rpc(rpc),
          peer_of(peer_of), timeout(timeout) {}

    void OnAlarm(bool fired) {
      if (!fired || taken || done.done()) return;
      server_context.TryCancel();
      metrics::UnreadAnswerCancelled(rpc);
      LogWarning(rpc, " call from ", peer_of(&server_context),
                 ": its client did not read its answer within ", absl::FormatDuration(timeout),
                 " of it being ready (--call-timeout): the call is cancelled and its answer's "
                 "memory freed");
    }

    grpc::Alarm alarm;
    const std::shared_ptr<const void> call;
    grpc::ServerContext& server_context;
    const grpc_asio::CallDone& done;
    const char* const rpc;
    const CallLogScope::PeerOf peer_of;
    const absl::Duration timeout;
    bool taken = false;
  };

  std::shared_ptr<Armed> armed_;
};

}  // namespace cnp::rpc
