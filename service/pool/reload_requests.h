// Reload requests (SIGHUP) merged, as both worker pools take them - the stateless calls'
// (AsyncWorkerPool) and the direct sessions' (service/session) - so that the rule is written
// once and applied where each pool knows whether a reload of its own is still running.
//
// The first request starts a reload at once. Requests that come while a reload runs, or less
// than `quiet` after the request before them, are merged into one more, started once no reload
// runs and no request came for `quiet`: a storm of 200 SIGHUPs reloads twice, not 200 times -
// also when each reload ends before the next signal comes - and code changed during the storm
// is still loaded after it. Not thread-safe: each pool keeps its own on its control loop.
#pragma once

#include "absl/time/time.h"

namespace cnp::pool {

class ReloadRequests {
 public:
  explicit ReloadRequests(absl::Duration quiet) : quiet_(quiet) {}

  enum class Answer {
    kStartNow,       // reload now
    kMerged,         // merged into one more reload, due when FollowUpDue says
    kAlreadyMerged,  // the same, and an earlier request was already merged (no news to log)
  };
  // A request at `now`; `running` says whether a reload of this pool is still running.
  Answer Ask(absl::Time now, bool running);

  // To be asked once no reload runs: whether the merged reload is due at `now` (it is then no
  // longer pending). While it waits for quiet, `next_check` is brought forward to when it is due.
  bool FollowUpDue(absl::Time now, absl::Time& next_check);

  bool pending() const { return pending_; }

 private:
  const absl::Duration quiet_;
  bool pending_ = false;  // merged requests wait for a reload of their own
  absl::Time last_request_ = absl::InfinitePast();
};

}  // namespace cnp::pool
