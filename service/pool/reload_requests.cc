#include "service/pool/reload_requests.h"

#include <algorithm>

namespace cnp::pool {

ReloadRequests::Answer ReloadRequests::Ask(absl::Time now, bool running) {
  // Within `quiet` of the last request the storm is still on, even if the reload it started
  // has already ended: a caller that waits for each reload before it signals again would
  // otherwise restart the workers once per signal.
  const bool storm_on = now - last_request_ < quiet_;
  last_request_ = now;
  if (!running && !pending_ && !storm_on) return Answer::kStartNow;
  const bool already = pending_;
  pending_ = true;
  return already ? Answer::kAlreadyMerged : Answer::kMerged;
}

bool ReloadRequests::FollowUpDue(absl::Time now, absl::Time& next_check) {
  if (!pending_) return false;
  const absl::Time due = last_request_ + quiet_;
  if (now < due) {
    next_check = std::min(next_check, due);
    return false;
  }
  pending_ = false;
  return true;
}

}  // namespace cnp::pool
