// An answer its client does not take. gRPC holds an answer until the client's HTTP/2 window lets
// it out, for as long as the call stays open: a client that never opens its window (or stops
// reading a stream) would make the server hold every answer it built. So from the moment an
// answer is ready the call has `timeout` (--call-timeout) to take it, plus a second per MiB of
// it (gRPC says when the last byte has gone, not how the sending goes: a client reading a
// large answer over a slow link is not cut off for being slow, only one slower than 1 MiB/s);
// past that the call is cancelled, which frees the answer, a warning names the call and its
// peer, and cnp_unread_answer_cancels_total{rpc} counts it.
//
//   UnreadAnswerWatch watch(context, call, server_context, done, rpc, peer_of, timeout);
//   for each answer: watch.Ready(bytes); co_await Write(...); watch.Taken();
//   watch.Stop();  // the call is over (or when `watch` is destroyed)
//
// A stream in lockstep answers thousands of lines a second, so one alarm serves them all: it is
// set when an answer is ready and none is set, and when it comes it looks at the answer waiting
// then (if any) and is set again for what that one has left. An answer due before the alarm
// (a small one after a large one was taken) sets it sooner. Everything runs on the call's
// GrpcContext thread.
#pragma once

#include <chrono>
#include <cstdint>
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
  // The alarm's clock: gRPC's alarms wait on a monotonic clock too.
  using Clock = std::chrono::steady_clock;

 public:
  // Watches nothing when `timeout` is infinite. `call` owns `server_context` and `done`, and is
  // kept until the alarm has come back; `done` tells a call that has ended (the alarm may fire
  // after it, and must not cancel what is no longer there). The peer is asked for only when
  // the warning is written.
  UnreadAnswerWatch(grpc_asio::GrpcContext& context, std::shared_ptr<const void> call,
                    grpc::ServerContext& server_context, const grpc_asio::CallDone& done,
                    const char* rpc, CallLogScope::PeerOf peer_of, absl::Duration timeout) {
    if (timeout >= absl::InfiniteDuration()) return;
    state_ = std::make_shared<State>(context, std::move(call), server_context, done, rpc, peer_of,
                                     timeout);
  }
  UnreadAnswerWatch(const UnreadAnswerWatch&) = delete;
  UnreadAnswerWatch& operator=(const UnreadAnswerWatch&) = delete;
  ~UnreadAnswerWatch() { Stop(); }

  // An answer of `bytes` is ready: its client has the timeout from now to take it, and a
  // second more per MiB.
  void Ready(int64_t bytes) {
    if (state_ == nullptr) return;
    const absl::Duration allowed = state_->timeout + absl::Seconds(1) * (bytes >> 20);
    state_->due = Clock::now() + absl::ToChronoNanoseconds(allowed);
    state_->waiting = true;
    if (!state_->armed) {
      State::Arm(state_, allowed);
    } else if (state_->due < state_->alarm_at && !state_->pulling_in) {
      // Set for a larger answer taken since: taken back, and set again for this one when the
      // cancel comes back (an alarm is set again only once it has completed).
      state_->pulling_in = true;
      state_->alarm.Cancel();
    }
  }

  // The answer left.
  void Taken() {
    if (state_ != nullptr) state_->waiting = false;
  }

  // The call is over: the alarm is taken back (its cancelled completion comes soon after).
  void Stop() {
    if (state_ == nullptr) return;
    state_->stopped = true;
    if (state_->armed) state_->alarm.Cancel();
    state_.reset();
  }

 private:
  struct State {
    State(grpc_asio::GrpcContext& context, std::shared_ptr<const void> call,
          grpc::ServerContext& server_context, const grpc_asio::CallDone& done, const char* rpc,
          CallLogScope::PeerOf peer_of, absl::Duration timeout)
        : context(context), call(std::move(call)), server_context(server_context), done(done),
          rpc(rpc), peer_of(peer_of), timeout(timeout) {}

    static void Arm(const std::shared_ptr<State>& self, absl::Duration after) {
      self->armed = true;
      self->alarm_at = Clock::now() + absl::ToChronoNanoseconds(after);
      grpc_asio::SetAlarm(self->context, self->alarm, after,
                          [self](bool fired) { self->OnAlarm(self, fired); });
    }

    void OnAlarm(const std::shared_ptr<State>& self, bool fired) {
      armed = false;
      const bool pulled_in = std::exchange(pulling_in, false);
      if (stopped || done.done()) return;
      if (!fired && !pulled_in) return;
      if (!waiting) return;  // none waits: set at the next one
      // The alarm was set for an earlier answer, which was taken: this one has time left.
      const absl::Duration left = absl::FromChrono(due - Clock::now());
      if (left > timeout / 100) {
        Arm(self, left);
        return;
      }
      server_context.TryCancel();
      metrics::UnreadAnswerCancelled(rpc);
      LogWarning(rpc, " call from ", peer_of(&server_context),
                 ": its client did not read its answer within ", absl::FormatDuration(timeout),
                 " of it being ready (--call-timeout, and a second per MiB of the answer): the "
                 "call is cancelled and its answer's memory freed");
    }

    grpc_asio::GrpcContext& context;
    grpc::Alarm alarm;
    const std::shared_ptr<const void> call;
    grpc::ServerContext& server_context;
    const grpc_asio::CallDone& done;
    const char* const rpc;
    const CallLogScope::PeerOf peer_of;
    const absl::Duration timeout;
    Clock::time_point due;  // when the answer waiting must have been taken
    Clock::time_point alarm_at;  // when the alarm set comes
    bool pulling_in = false;     // the alarm was cancelled to be set sooner
    bool waiting = false;   // an answer waits for its client
    bool armed = false;
    bool stopped = false;
  };

  std::shared_ptr<State> state_;
};

}  // namespace cnp::rpc
