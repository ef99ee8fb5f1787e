// A task's deadline that its log() lines restart: a CouchDB session's command, which CouchDB
// waits for as long as the function keeps logging (it restarts its read timeout on each line).
// The worker's reader hands each interim line here (TaskLogListener), which passes it to the
// caller's listener and takes the deadline it answers; the pool's timer, when it fires, looks
// here and waits on if the deadline has moved.
//
// Not thread-safe, and needs not be: the lines of one exchange are read first on its holder's
// thread (a quick exchange), then on the pool's, which the hand-over between them orders; the
// timer reads the deadline on the pool's thread, while the exchange is there.
#pragma once

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/time/time.h"
#include "service/pool/worker.h"

namespace cnp::pool {

class RestartedDeadline final : public TaskLogListener {
 public:
  RestartedDeadline(TaskLogListener& caller, absl::Time deadline)
      : caller_(caller), deadline_(deadline) {}

  absl::Time OnLog(Reply interim) override {
    deadline_ = std::max(deadline_, caller_.OnLog(std::move(interim)));
    return deadline_;
  }
  absl::Time deadline() const { return deadline_; }

 private:
  TaskLogListener& caller_;
  absl::Time deadline_;
};

// For one exchange on `worker`: when a caller listens (`caller` not null), the task asks for its
// lines as they are made, and the worker hands them to it through a RestartedDeadline, until
// this ends. It must end before the worker goes back to the pool, where another exchange may
// set its own listener.
class LogForwarding {
 public:
  LogForwarding(Worker& worker, Task& task, TaskLogListener* caller, absl::Time deadline)
      : worker_(worker) {
    if (caller == nullptr) return;
    task.set_logs_early(true);
    restarts_.emplace(*caller, deadline);
    worker_.ForwardLogsTo(&*restarts_);
  }
  ~LogForwarding() {
    if (restarts_.has_value()) worker_.ForwardLogsTo(nullptr);
  }
  LogForwarding(const LogForwarding&) = delete;
  LogForwarding& operator=(const LogForwarding&) = delete;

  // Null when nobody listens: the deadline does not move.
  const RestartedDeadline* restarts() const {
    return restarts_.has_value() ? &*restarts_ : nullptr;
  }

 private:
  Worker& worker_;
  std::optional<RestartedDeadline> restarts_;
};

}  // namespace cnp::pool
