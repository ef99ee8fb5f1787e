// Callers waiting for a worker of a busy pool, served in the order they came.
//
// At most `capacity` (--max-queue) are let in; the pool refuses one more with
// RESOURCE_EXHAUSTED before it waits. A batch's feeders do not count: the batch is one caller. A worker that comes free is handed to the first caller
// waiting, who is woken; one whose deadline passes or who is cancelled leaves the queue. A
// batch's feeder that passes its worker on between two tasks (so that a caller waits for one
// task of a batch, not for the batch) hands it to the first caller that is not one of that
// batch's own feeders, and may queue again whatever the count (it was let in already).
//
// On the pool's context only, as the rest of its state.
#pragma once

#include <cstddef>
#include <list>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "service/pool/worker_slot.h"

namespace cnp::pool {

struct Batch;

class AdmissionQueue {
 public:
  AdmissionQueue(asio::io_context& context, int capacity)
      : context_(context), capacity_(capacity) {}
  AdmissionQueue(const AdmissionQueue&) = delete;
  AdmissionQueue& operator=(const AdmissionQueue&) = delete;

  size_t size() const { return waiters_.size(); }
  bool empty() const { return waiters_.empty(); }
  // The callers waiting: the waiters but a batch's feeders.
  int callers() const { return callers_; }
  // A new caller would not be let in.
  bool full() const { return callers_ >= capacity_; }
  // Some caller waits that is not one of `batch`'s feeders.
  bool AnyWaitingBesides(const Batch& batch) const;

  // How a wait ended: handed a worker (`slot`, now the caller's), refused (`failure`, from
  // FailAll), or neither: the deadline passed or the caller was cancelled (its coroutine's
  // cancellation state tells which). A worker may be handed over just as the caller is
  // cancelled: the caller then gives it back.
  struct Turn {
    WorkerSlot* slot = nullptr;
    absl::Status failure;
  };
  // Queues the caller (a feeder of `batch`, or nullptr) until its turn, its deadline or its
  // cancellation. Counted in cnp_queue_depth and the queue-wait histogram; in callers() unless
  // it is a feeder of a batch that has its place already (`feeder`).
  asio::awaitable<Turn> Wait(absl::Time deadline, const Batch* batch = nullptr,
                             bool feeder = false);

  // Hands `slot` to the first caller waiting (with `passed_by`, the first that is not one of
  // that batch's feeders, if any) and wakes it; false when nobody waits.
  bool HandOver(WorkerSlot* slot, const Batch* passed_by = nullptr);

  // Wakes every caller waiting with `why` (no worker can start; the server is stopping).
  void FailAll(const absl::Status& why);

 private:
  // A caller queued. Woken by cancelling `wakeup`, whose expiry is the deadline.
  struct Waiter {
    explicit Waiter(asio::io_context& context) : wakeup(context) {}
    asio::steady_timer wakeup;
    Turn turn;
    bool queued = true;
    const Batch* batch = nullptr;  // the batch whose feeder waits, if one does
    bool feeder = false;
  };
  // Uncounts `waiter`, which has just been taken out of waiters_.
  void Left(const Waiter& waiter) {
    if (!waiter.feeder) --callers_;
  }

  asio::io_context& context_;
  const int capacity_;
  std::list<Waiter*> waiters_;
  int callers_ = 0;
};

}  // namespace cnp::pool
