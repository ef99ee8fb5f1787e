#include "service/pool/restart_policy.h"

#include <algorithm>

namespace cnp::pool {

absl::Duration RestartBackoff(absl::Duration min, absl::Duration max, int failures) {
  if (failures <= 0) return absl::ZeroDuration();
  absl::Duration d = min;
  for (int i = 1; i < failures && d < max; ++i) d *= 2;
  return std::min(d, max);
}

absl::Duration RestartPolicy::Backoff() const {
  return RestartBackoff(min_backoff_, max_backoff_, failed_starts_ + deaths_without_task_);
}

absl::Duration RestartPolicy::StartFailed() {
  ++failed_starts_;
  return Backoff();
}

absl::Duration RestartPolicy::DiedWithoutTask() {
  ++deaths_without_task_;
  return Backoff();
}

absl::Duration RestartPolicy::CrashedByTask(absl::Time now) const {
  return std::max(last_start_ + min_crash_restart_interval_ - now, absl::ZeroDuration());
}

}  // namespace cnp::pool
