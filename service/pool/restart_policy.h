// When one slot of the pool starts its next worker, and whether callers may wait for it.
//
// Three ways a worker goes, three delays:
//   its start failed          a broken interpreter or an import that fails at start fails the
//                             next start the same way: back off, doubling from min_backoff to
//                             max_backoff; after failures_before_fail_fast in a row callers
//                             fail at once instead of waiting out their deadlines
//   it died with no task      (idle, or between a session's calls: the OOM killer, say) the
//                             same backoff, counted with the failed starts
//   its task crashed it       the task was at fault and the next worker starts cleanly: no
//                             backoff (one client's crashing calls would make every caller wait
//                             it out), only at most one start per min_crash_restart_interval,
//                             so that nothing but crashing calls is not a fork storm
// A start that succeeds ends the failed starts in a row; a call that ends well ends the deaths.
// No clock of its own: the pool gives it the time, tests give it any.
#pragma once

#include "absl/time/time.h"
#include "service/pool/pool_options.h"

namespace cnp::pool {

// The delay before restarting after `failures` failures in a row: none for the first start,
// then `min` doubling up to `max`. The session workers' pool (service/session) backs off by it
// too, with bounds of its own.
absl::Duration RestartBackoff(absl::Duration min, absl::Duration max, int failures);

class RestartPolicy {
 public:
  explicit RestartPolicy(const PoolOptions& options)
      : min_backoff_(options.min_backoff), max_backoff_(options.max_backoff),
        min_crash_restart_interval_(options.min_crash_restart_interval),
        failures_before_fail_fast_(options.failures_before_fail_fast) {}

  // A start attempt begins at `now`.
  void StartBegan(absl::Time now) { last_start_ = now; }
  // The worker came up.
  void Started() { failed_starts_ = 0; }
  // The start failed: how long until the next attempt.
  absl::Duration StartFailed();
  // A started worker died with no task to explain it: how long until the next start.
  absl::Duration DiedWithoutTask();
  // The task it ran crashed it, at `now`: how long until the next start.
  absl::Duration CrashedByTask(absl::Time now) const;
  // A call ended well on the slot's worker.
  void CallEnded() { deaths_without_task_ = 0; }

  // Whether the slot's last start failed (the pool's Start waits for each slot to be up or to
  // have failed once).
  bool LastStartFailed() const { return failed_starts_ > 0; }
  // Whether its starts failed so often in a row that callers should not wait for it (the pool
  // keeps trying).
  bool GivenUp() const { return failed_starts_ >= failures_before_fail_fast_; }

 private:
  absl::Duration Backoff() const;

  const absl::Duration min_backoff_;
  const absl::Duration max_backoff_;
  const absl::Duration min_crash_restart_interval_;
  const int failures_before_fail_fast_;
  int failed_starts_ = 0;
  int deaths_without_task_ = 0;
  absl::Time last_start_ = absl::InfinitePast();
};

}  // namespace cnp::pool
