// A Session stream with heartbeats, for a client that asked for them (common/session_heartbeat.h):
// the stream writes an empty partial SessionOutput whenever a command has kept it silent for the
// interval (stream_heartbeat.h), and the stream's first output tells the client the interval, so
// that it knows silence longer than that means the server has stopped. A client that did not
// ask (an older cnp-adapter) gets neither: it would read a heartbeat as the command's answer.
#pragma once

#include <memory>
#include <optional>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "cnp/v1/functions.pb.h"
#include "service/rpc/rpc_server.h"

namespace cnp::rpc {

class HeartbeatingSession final : public SessionHandler {
 public:
  HeartbeatingSession(std::unique_ptr<SessionHandler> session, absl::Duration interval)
      : session_(std::move(session)), interval_(interval) {}

  asio::awaitable<absl::StatusOr<std::optional<v1::SessionOutput>>> Handle(
      v1::SessionInput& input) override {
    absl::StatusOr<std::optional<v1::SessionOutput>> output = co_await session_->Handle(input);
    if (!announced_ && output.ok() && output->has_value()) {
      (*output)->set_heartbeat_ms(static_cast<int32_t>(absl::ToInt64Milliseconds(interval_)));
      announced_ = true;
    }
    co_return output;
  }
  bool EndsStream(const v1::SessionOutput& output) override {
    return session_->EndsStream(output);
  }
  bool HoldsCommandOpen() const override { return session_->HoldsCommandOpen(); }
  void WriteEarlyWith(EarlyWriter writer) override {
    session_->WriteEarlyWith(std::move(writer));
  }
  asio::awaitable<void> Close() override { co_await session_->Close(); }

  absl::Duration HeartbeatInterval() const override { return interval_; }
  // A heartbeat says the interval too: it may be the stream's first output (the first command,
  // an import that takes seconds, runs past the interval), and a client that learnt nothing
  // from it would not hold the stream's silence against it.
  v1::SessionOutput Heartbeat() const override {
    v1::SessionOutput beat;
    beat.set_partial(true);
    beat.set_heartbeat_ms(static_cast<int32_t>(absl::ToInt64Milliseconds(interval_)));
    return beat;
  }
  // A large answer may take longer to cross a slow link than the client allows silence for:
  // announced, its transfer is not taken for a server that stopped (and the command replayed
  // on another, to cross the same link again).
  std::optional<v1::SessionOutput> Forewarning(int64_t answer_bytes) const override {
    if (answer_bytes < kForewarnedAnswerBytes) return std::nullopt;
    v1::SessionOutput notice = Heartbeat();
    notice.set_answer_bytes(answer_bytes);
    return notice;
  }
  static constexpr int64_t kForewarnedAnswerBytes = int64_t{256} << 10;

 private:
  const std::unique_ptr<SessionHandler> session_;
  const absl::Duration interval_;
  bool announced_ = false;
};

}  // namespace cnp::rpc
