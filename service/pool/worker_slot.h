// One of the pool's places for a worker: the worker in it now (none while it is down or
// starting), what it has done, and what the pool knows about replacing it. Touched only on the
// pool's context.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "service/pool/pool_options.h"
#include "service/pool/restart_policy.h"
#include "service/pool/worker.h"

namespace cnp::pool {

struct WorkerSlot {
  enum class State { kStarting, kIdle, kBusy, kDown, kStopped };

  WorkerSlot(int index, const PoolOptions& options) : index(index), restarts(options) {}

  const int index;
  State state = State::kDown;
  // Shared with the watch that awaits its end (AsyncWorkerPool::WatchForEnd).
  std::shared_ptr<Worker> worker;
  int64_t calls = 0;
  uint64_t generation = 0;  // reload generation the worker was started in
  RestartPolicy restarts;
  absl::Time restart_at = absl::InfinitePast();
  std::string last_failure;
  // INVALID_ARGUMENT when the last start failed because the worker refused the settings it was
  // started with (so would every start), UNAVAILABLE for any other failure.
  absl::StatusCode last_start_failure = absl::StatusCode::kOk;
  // While a caller keeps the worker (RunAndKeep): how to ask for it back, and whether that was
  // done; both cleared when the worker comes back.
  std::function<void()> wanted;
  bool asked_back = false;
  // Set while a caller holds the worker: it ended meanwhile (how, from WatchForEnd), or the
  // memory watch found it over the cap. Either way it is replaced when it comes back.
  std::optional<std::string> ended_while_held;
  bool over_memory_cap = false;
};

}  // namespace cnp::pool
