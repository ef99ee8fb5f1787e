#include "service/pool/rolling_reload.h"

#include <algorithm>

namespace cnp::pool {

bool RollingReload::Running(const std::vector<std::unique_ptr<WorkerSlot>>& slots) const {
  // A slot down because its worker failed to start has no worker to replace: whenever it
  // starts one, that worker is of the generation then (it held the reload, its "finished" and
  // any follow-up reload, for as long as it failed). One down because the reload retired its
  // worker is the reload still running: its new worker is not up yet.
  return std::any_of(slots.begin(), slots.end(), [this](const auto& slot) {
    const bool failing_to_start =
        slot->state == WorkerSlot::State::kDown && slot->restarts.LastStartFailed();
    return slot->state != WorkerSlot::State::kStopped && !failing_to_start && Stale(*slot);
  });
}

void RollingReload::Begin() {
  ++generation_;
  finish_reported_ = false;
}

ReloadRequests::Answer RollingReload::Ask(absl::Time now, bool running) {
  const ReloadRequests::Answer answer = requests_.Ask(now, running);
  if (answer == ReloadRequests::Answer::kStartNow) Begin();
  return answer;
}

RollingReload::Progress RollingReload::WhenNoneRuns(absl::Time now, absl::Time& next_check) {
  if (requests_.FollowUpDue(now, next_check)) {
    Begin();
    return Progress::kFollowUpBegan;
  }
  if (requests_.pending() || finish_reported_) return Progress::kNothing;
  finish_reported_ = true;
  return Progress::kFinished;
}

WorkerSlot* RollingReload::NextToReplace(const std::vector<WorkerSlot*>& idle) const {
  auto stale = std::find_if(idle.begin(), idle.end(),
                            [this](const WorkerSlot* slot) { return Stale(*slot); });
  return stale == idle.end() ? nullptr : *stale;
}

}  // namespace cnp::pool
