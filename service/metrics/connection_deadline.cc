#include "service/metrics/connection_deadline.h"

#include <sys/socket.h>

#include "absl/time/clock.h"

namespace cnp::metrics {

ConnectionDeadline::ConnectionDeadline(absl::Duration deadline, absl::Duration sweep)
    : deadline_(deadline), sweep_(sweep), sweeper_([this] { Sweep(); }) {}

ConnectionDeadline::~ConnectionDeadline() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  sweeper_.join();
}

void ConnectionDeadline::Started(int fd) {
  absl::MutexLock lock(&mu_);
  started_[fd] = absl::Now();
}

void ConnectionDeadline::Ended(int fd) {
  absl::MutexLock lock(&mu_);
  started_.erase(fd);
}

void ConnectionDeadline::Sweep() {
  absl::MutexLock lock(&mu_);
  auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
  // The wait is the sweep's period; it ends at once when the owner stops.
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping), sweep_)) {
    const absl::Time too_old = absl::Now() - deadline_;
    for (auto it = started_.begin(); it != started_.end();) {
      if (it->second > too_old) {
        ++it;
        continue;
      }
      // libmicrohttpd reads the end of the stream at its next poll and closes the connection
      // (then Ended). Shut down once: the entry goes now.
      ::shutdown(it->first, SHUT_RDWR);
      it = started_.erase(it);
    }
  }
}

}  // namespace cnp::metrics
