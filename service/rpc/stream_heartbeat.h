// Heartbeats on a lockstep stream: while the stream's handler works on a message, a heartbeat
// message is written whenever the stream has been silent for `interval`. A client reaching the
// server through a proxy cannot find a server that has stopped (frozen, its host gone) with
// HTTP/2 pings, which the proxy answers itself; silence longer than the interval tells it.
//
// What it costs per message: a clock read and two flags. A gRPC alarm, set when a message
// comes and none is set, fires at most once per interval while the stream is busy and is not
// set again once the stream is idle: an idle stream costs nothing, a busy one an alarm a second.
//
// The same stream writes what the handler sends ahead of its answer (WriteEarly: a CouchDB
// function's log lines, which CouchDB must get as they are made); each such write counts as
// the stream not being silent.
//
// Everything runs on the stream's GrpcContext thread. gRPC allows one write in flight on a
// stream: after Idle(), a stream that finds writing() awaits WriteDone() before it writes its
// own answer or ends; the early responses queued then are written first.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "asio/async_result.hpp"
#include "asio/use_awaitable.hpp"
#include "grpcpp/alarm.h"
#include "grpcpp/support/byte_buffer.h"
#include "service/grpc_asio/grpc_context.h"
#include "service/grpc_asio/grpc_operations.h"

namespace cnp::rpc {

template <class Stream, class Response>
class StreamHeartbeat final
    : public std::enable_shared_from_this<StreamHeartbeat<Stream, Response>> {
 public:
  // `stream` must stay alive while a heartbeat is written: `stream_owner` owns it, and is
  // kept until this object goes.
  StreamHeartbeat(grpc_asio::GrpcContext& context, Stream& stream,
                  std::shared_ptr<const void> stream_owner, Response beat,
                  absl::Duration interval)
      : context_(context), stream_(stream), stream_owner_(std::move(stream_owner)),
        beat_(std::move(beat)), interval_(interval) {}

  StreamHeartbeat(const StreamHeartbeat&) = delete;
  StreamHeartbeat& operator=(const StreamHeartbeat&) = delete;

  // A message came: its handler starts work.
  void Busy() {
    busy_ = true;
    silent_since_ = Clock::now();
    if (!armed_ && !stopped_) Arm();
  }
  // The handler has answered (or failed): no heartbeat starts from now on.
  void Idle() { busy_ = false; }
  // A heartbeat or an early response is being written: await WriteDone() before writing on
  // the stream.
  bool writing() const { return writing_; }

  // Writes `early` as soon as what is in flight is written, before the handler's answer. False,
  // with nothing queued, once the stream has stopped or the early responses its client has not
  // taken yet would pass kMaxQueuedEarlyBytes: the handler tries again later, or sends them
  // with its answer.
  bool WriteEarly(Response early) {
    if (stopped_) return false;
    const int64_t bytes = BytesOf(early);
    // One larger than the bound goes when nothing waits (a single long log line).
    if (!early_.empty() && queued_bytes_ + bytes > kMaxQueuedEarlyBytes) return false;
    queued_bytes_ += bytes;
    early_.push_back(std::move(early));
    if (!writing_) WriteNextEarly();
    return true;
  }
  static constexpr int64_t kMaxQueuedEarlyBytes = int64_t{1} << 20;

  // Completes once the heartbeat being written is written (or failed).
  template <class CompletionToken = asio::use_awaitable_t<>>
  auto WriteDone(CompletionToken&& token = {}) {
    return asio::async_initiate<CompletionToken, void()>(
        [this](auto handler) {
          if (!writing_) {
            context_.Post(std::move(handler));
          } else {
            write_waiter_.emplace(std::move(handler));
          }
        },
        token);
  }

  // The stream ends: no more heartbeats, and the alarm is taken back (its cancelled
  // completion, which holds this object, comes soon after).
  void Stop() {
    stopped_ = true;
    busy_ = false;
    early_.clear();
    queued_bytes_ = 0;
    if (armed_) alarm_.Cancel();
  }

 private:
  using Clock = std::chrono::steady_clock;

  static int64_t BytesOf(const grpc::ByteBuffer& message) {
    return static_cast<int64_t>(message.Length());
  }
  template <class Message>
  static int64_t BytesOf(const Message& message) {
    return static_cast<int64_t>(message.ByteSizeLong());
  }

  // How long until the stream will have been silent for the interval.
  absl::Duration UntilDue() const {
    return interval_ - absl::FromChrono(Clock::now() - silent_since_);
  }

  void Arm() {
    armed_ = true;
    grpc_asio::SetAlarm(context_, alarm_, std::max(UntilDue(), absl::ZeroDuration()),
                        [self = this->shared_from_this()](bool fired) { self->OnAlarm(fired); });
  }

  void OnAlarm(bool fired) {
    armed_ = false;
    if (!fired || stopped_ || !busy_) return;
    // The alarm was set for the message before this one, which was answered quickly: the
    // silence of this one has not lasted the interval yet. (A tenth of it is the slack for
    // the alarm's clock, which is gRPC's.)
    if (UntilDue() > interval_ / 10) {
      Arm();
      return;
    }
    if (writing_) return;  // an early response: its end arms the alarm again
    writing_ = true;
    grpc_asio::Write(context_, stream_, beat_,
                     [self = this->shared_from_this()](bool ok) { self->OnWritten(ok); });
  }

  void WriteNextEarly() {
    writing_ = true;
    in_flight_ = std::move(early_.front());
    early_.pop_front();
    queued_bytes_ -= BytesOf(in_flight_);
    grpc_asio::Write(context_, stream_, in_flight_,
                     [self = this->shared_from_this()](bool ok) { self->OnWritten(ok); });
  }

  void OnWritten(bool ok) {
    writing_ = false;
    silent_since_ = Clock::now();
    if (!ok) {
      stopped_ = true;  // the call is over: the stream finds out on its own
      early_.clear();
      queued_bytes_ = 0;
    }
    if (!early_.empty()) {
      WriteNextEarly();
      return;
    }
    if (write_waiter_.has_value()) {
      auto waiter = std::move(*write_waiter_);
      write_waiter_.reset();
      std::move(waiter)();
      return;
    }
    if (busy_ && !stopped_ && !armed_) Arm();
  }

  grpc_asio::GrpcContext& context_;
  Stream& stream_;
  const std::shared_ptr<const void> stream_owner_;
  const Response beat_;
  const absl::Duration interval_;
  grpc::Alarm alarm_;
  Clock::time_point silent_since_;
  bool busy_ = false;
  bool armed_ = false;
  bool writing_ = false;
  bool stopped_ = false;
  std::optional<absl::AnyInvocable<void() &&>> write_waiter_;
  std::deque<Response> early_;  // WriteEarly's, not yet written
  int64_t queued_bytes_ = 0;    // of early_, as serialized
  Response in_flight_;          // the early response being written
};

}  // namespace cnp::rpc
