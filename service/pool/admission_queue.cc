#include "service/pool/admission_queue.h"

#include <algorithm>
#include <chrono>

#include "asio/redirect_error.hpp"
#include "asio/use_awaitable.hpp"
#include "service/metrics/service_metrics.h"

namespace cnp::pool {

bool AdmissionQueue::AnyWaitingBesides(const Batch& batch) const {
  return std::any_of(waiters_.begin(), waiters_.end(),
                     [&batch](const Waiter* waiter) { return waiter->batch != &batch; });
}

asio::awaitable<AdmissionQueue::Turn> AdmissionQueue::Wait(absl::Time deadline,
                                                           const Batch* batch, bool feeder) {
  const absl::Time queued = absl::Now();
  // The wait measured on a clock that does not step (the deadline is wall time, as given).
  const auto waiting_since = std::chrono::steady_clock::now();
  Waiter waiter(context_);
  waiter.batch = batch;
  waiter.feeder = feeder;
  if (!feeder) ++callers_;
  if (deadline == absl::InfiniteFuture()) {
    waiter.wakeup.expires_at(asio::steady_timer::time_point::max());
  } else {
    waiter.wakeup.expires_after(
        absl::ToChronoNanoseconds(std::max(deadline - queued, absl::ZeroDuration())));
  }
  auto position = waiters_.insert(waiters_.end(), &waiter);
  metrics::QueueDepth().Add(1);
  asio::error_code ec;
  co_await waiter.wakeup.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  metrics::QueueDepth().Add(-1);
  metrics::QueueWaited(absl::FromChrono(std::chrono::steady_clock::now() - waiting_since));
  if (waiter.queued) {
    waiters_.erase(position);
    Left(waiter);
  }
  co_return std::move(waiter.turn);
}

bool AdmissionQueue::HandOver(WorkerSlot* slot, const Batch* passed_by) {
  auto next = waiters_.begin();
  if (passed_by != nullptr) {
    next = std::find_if(waiters_.begin(), waiters_.end(),
                        [passed_by](const Waiter* w) { return w->batch != passed_by; });
    if (next == waiters_.end()) next = waiters_.begin();
  }
  if (next == waiters_.end()) return false;
  Waiter* waiter = *next;
  waiters_.erase(next);
  Left(*waiter);
  waiter->queued = false;
  waiter->turn.slot = slot;
  waiter->wakeup.cancel();
  return true;
}

void AdmissionQueue::FailAll(const absl::Status& why) {
  for (Waiter* waiter : waiters_) {
    waiter->queued = false;
    waiter->turn.failure = why;
    waiter->wakeup.cancel();
  }
  waiters_.clear();
  callers_ = 0;
}

}  // namespace cnp::pool
