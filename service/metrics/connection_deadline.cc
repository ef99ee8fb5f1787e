#include "service/metrics/connection_deadline.h"

#include <sys/socket.h>

#include "absl/time/clock.h"

namespace cnp::metrics {

ConnectionDeadline::ConnectionDeadline(absl::Duration request_deadline,
                                       absl::Duration answer_deadline, absl::Duration sweep)
    : request_deadline_(request_deadline),
      answer_deadline_(answer_deadline),
      sweep_(sweep),
      sweeper_([this] { Sweep(); }) {}

ConnectionDeadline::~ConnectionDeadline() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  sweeper_.join();
}

void ConnectionDeadline::Started(int fd) {
  absl::MutexLock lock(&mu_);
  deadlines_[fd] = absl::Now() + request_deadline_;
}

void ConnectionDeadline::Requested(int fd) {
  absl::MutexLock lock(&mu_);
  // Not one shut down already (its entry is gone): libmicrohttpd may still read what came.
  if (auto it = deadlines_.find(fd); it != deadlines_.end()) {
    it->second = absl::Now() + answer_deadline_;
  }
}

void ConnectionDeadline::Ended(int fd) {
  absl::MutexLock lock(&mu_);
  deadlines_.erase(fd);
}

void ConnectionDeadline::Sweep() {
  absl::MutexLock lock(&mu_);
  auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
  // The wait is the sweep's period; it ends at once when the owner stops.
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping), sweep_)) {
    const absl::Time now = absl::Now();
    for (auto it = deadlines_.begin(); it != deadlines_.end();) {
      if (it->second > now) {
        ++it;
        continue;
      }
      // libmicrohttpd reads the end of the stream at its next poll and closes the connection
      // (then Ended). Shut down once: the entry goes now.
      ::shutdown(it->first, SHUT_RDWR);
      it = deadlines_.erase(it);
    }
  }
}

}  // namespace cnp::metrics
