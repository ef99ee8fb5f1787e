// How the worker pool runs its workers (flags of cnp-server, see service/config).
#pragma once

#include <cstdint>

#include "absl/time/time.h"

namespace cnp::pool {

struct PoolOptions {
  int workers = 2;
  // Callers allowed to wait for a busy pool; one more gets RESOURCE_EXHAUSTED.
  int max_queue = 256;
  // A worker is replaced after this many calls (0: never).
  int64_t max_calls_per_worker = 0;
  // The workers' memory cap (--worker-memory-mb, their address space): an idle worker grown,
  // since it started, into the last of it is replaced (memory_cap.h; 0: never).
  int64_t memory_cap_bytes = 0;
  // How long a new worker may take to start Python and answer its first frame.
  absl::Duration startup_timeout = absl::Seconds(30);
  // Restart delays after failed starts, and deaths of started workers that no task explains
  // (while idle, or between a session's calls), in a row (a call that ends well, or for failed
  // starts a start that succeeds, resets them): doubling from min to max. A broken interpreter
  // or an import that fails at start would fail the next start the same way.
  absl::Duration min_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(30);
  // A worker killed by the task it ran (a function that segfaults or calls os._exit) is
  // replaced at once instead: the task was at fault, the next worker starts cleanly, and the
  // other callers waiting for a worker must not wait out a backoff that one client's crashing
  // calls ran up. Only so often, though: a slot starts a worker at most once per this interval,
  // so that a client sending nothing but crashing calls costs each slot at most ten starts a
  // second (by default), not a fork storm.
  absl::Duration min_crash_restart_interval = absl::Milliseconds(100);
  // A slot whose start failed this many times in a row no longer counts as coming up: callers
  // fail at once instead of waiting out their deadline (the pool keeps retrying). Only failed
  // starts count: a worker that crashes on a call (or while idle) started, and callers wait
  // for its replacement.
  int failures_before_fail_fast = 3;
  // How long reload requests must stop coming before the merged follow-up reload starts.
  absl::Duration reload_quiet = absl::Milliseconds(500);
  // How often idle workers' memory is read (with memory_cap_bytes).
  absl::Duration memory_check_interval = absl::Seconds(2);
  // The answer limit of a task that does not set its own max_answer_bytes (0: none but the
  // frame's): --max-call-bytes, so that no task's reply is read past what a call may carry.
  int64_t max_answer_bytes = 0;
};

}  // namespace cnp::pool
