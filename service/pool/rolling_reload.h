// A reload of the pool's workers (SIGHUP), so that code changed on disk is imported anew
// without failing a call: every worker started before it is stale, and stale workers are
// replaced one at a time while the others serve (an idle one by the pool's maintenance, a busy
// one after its call: recycling_policy.h).
//
// Each reload is a generation: a worker belongs to the one it started in. Requests are merged
// by ReloadRequests (a storm of SIGHUPs reloads twice, not once per signal); the merged one
// begins once no reload runs. When the last stale worker is gone the reload is reported
// finished, once. On the pool's context only.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "service/pool/reload_requests.h"
#include "service/pool/worker_slot.h"

namespace cnp::pool {

class RollingReload {
 public:
  explicit RollingReload(absl::Duration quiet) : requests_(quiet) {}

  // The generation a worker starting now belongs to.
  uint64_t generation() const { return generation_; }
  // `slot`'s worker started before the last reload began.
  bool Stale(const WorkerSlot& slot) const { return slot.generation < generation_; }
  // Some slot not stopped still has a stale worker, or is starting one for it.
  bool Running(const std::vector<std::unique_ptr<WorkerSlot>>& slots) const;

  // A reload asked for at `now`, `running` telling whether one still runs. kStartNow: it began
  // (every worker is stale from now); otherwise it was merged into one more.
  ReloadRequests::Answer Ask(absl::Time now, bool running);

  enum class Progress {
    kNothing,
    kFollowUpBegan,  // the merged reload began (every worker is stale from now)
    kFinished,       // the last reload is over: say so (once per reload)
  };
  // Asked by the pool's maintenance once no reload runs; `next_check` is brought forward to
  // when a merged reload waiting for quiet is due.
  Progress WhenNoneRuns(absl::Time now, absl::Time& next_check);

  // Of the idle workers, the stale one to replace now, or none.
  WorkerSlot* NextToReplace(const std::vector<WorkerSlot*>& idle) const;

 private:
  void Begin();

  ReloadRequests requests_;
  uint64_t generation_ = 0;
  bool finish_reported_ = true;
};

}  // namespace cnp::pool
