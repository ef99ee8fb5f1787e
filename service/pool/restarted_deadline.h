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

}  // namespace cnp::pool
