// Whether a worker that has just finished its calls well takes another, or is replaced.
//
// In order, the first that holds:
//   the server is shutting down
//   its reply asked for it          it ran out of memory (MemoryError), or left Python threads
//                                   running after its call
//   it is over --worker-memory-mb   found by the pool's memory check while a session kept it
//   it reached --max-calls-per-worker (every exchange of a lease counts)
//   a reload (SIGHUP) wants it      one worker at a time: while another is being replaced it
//                                   serves on, and is replaced after a later call or, idle, by
//                                   the pool's rolling reload
// The answer names the reason in words for the log, and the cause cnp_worker_exits_total counts
// it by (none for a shutdown).
#pragma once

#include <cstdint>
#include <optional>

#include "service/pool/pool_options.h"
#include "service/pool/replacement_asked.h"

namespace cnp::pool {

// What is known of a worker whose calls ended well.
struct AfterCalls {
  int64_t calls = 0;  // all its calls so far, these included
  ReplacementAsked asked = ReplacementAsked::kNo;  // by the last reply
  bool over_memory_cap = false;
  bool stale = false;  // started before the last reload
  bool shutting_down = false;
  bool another_being_replaced = false;  // some slot is starting a worker or waits to
};

struct Recycling {
  const char* why;    // "because ..." in the log
  const char* cause;  // the metric's label, or nullptr
};

// Why the worker is to be replaced now, or nothing: it takes another call.
std::optional<Recycling> RecycleAfterCalls(const PoolOptions& options, const AfterCalls& worker);

}  // namespace cnp::pool
