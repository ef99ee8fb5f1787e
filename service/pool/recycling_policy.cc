#include "service/pool/recycling_policy.h"

namespace cnp::pool {

std::optional<Recycling> RecycleAfterCalls(const PoolOptions& options, const AfterCalls& worker) {
  if (worker.shutting_down) return Recycling{"the server is shutting down", nullptr};
  if (worker.asked == ReplacementAsked::kOutOfMemory) {
    return Recycling{"it ran out of memory", "memory"};
  }
  if (worker.asked == ReplacementAsked::kThreadsLeftRunning) {
    // (The worker logged which function left them, as a warning of its own.)
    return Recycling{"Python threads a function started were still running after its call",
                     "recycle"};
  }
  if (worker.over_memory_cap) return Recycling{"it is over its memory cap", "memory"};
  if (options.max_calls_per_worker > 0 && worker.calls >= options.max_calls_per_worker) {
    return Recycling{"it reached --max-calls-per-worker", "recycle"};
  }
  if (worker.stale && !worker.another_being_replaced) return Recycling{"of a reload", "reload"};
  return std::nullopt;
}

}  // namespace cnp::pool
