// Callers waiting for a worker (service/pool/admission_queue.h), without a pool: handed workers
// in the order they came, a batch's feeder passing its worker to a caller of another batch
// first, refused all at once, leaving the queue at their deadline or when cancelled, and the
// capacity that tells the pool to refuse one more.
//
// Every caller is a coroutine on one io_context driven by the test thread until it is settled;
// deadlines are short real durations, awaited by the context, never slept.
#include "service/pool/admission_queue.h"

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/this_coro.hpp"
#include "gtest/gtest.h"
#include "service/pool/batch.h"
#include "service/pool/pool_options.h"

namespace cnp::pool {
namespace {

class AdmissionQueueTest : public ::testing::Test {
 protected:
  struct Caller {
    bool done = false;
    bool cancelled = false;  // its coroutine's cancellation state when the wait ended
    AdmissionQueue::Turn turn;
    asio::cancellation_signal cancel;
  };

  // Queues a caller (a feeder of `batch`, or none) and runs the context until it waits.
  Caller& Queue(absl::Time deadline = absl::InfiniteFuture(), const Batch* batch = nullptr) {
    callers_.push_back(std::make_unique<Caller>());
    Caller* caller = callers_.back().get();
    const size_t before = queue_.size();
    asio::co_spawn(
        io_,
        [this, caller, deadline, batch]() -> asio::awaitable<void> {
          caller->turn = co_await queue_.Wait(deadline, batch);
          const asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
          caller->cancelled = state.cancelled() != asio::cancellation_type::none;
          caller->done = true;
        },
        asio::bind_cancellation_slot(caller->cancel.slot(), asio::detached));
    RunUntil([&] { return queue_.size() == before + 1; });
    return *caller;
  }

  void RunUntil(const std::function<bool()>& settled) {
    const absl::Time limit = absl::Now() + absl::Seconds(10);
    while (!settled()) {
      if (io_.stopped()) io_.restart();
      io_.run_one_for(std::chrono::milliseconds(50));
      ASSERT_LT(absl::Now(), limit) << "not settled within 10 s";
    }
  }

  WorkerSlot* NewSlot() {
    slots_.push_back(std::make_unique<WorkerSlot>(static_cast<int>(slots_.size()), options_));
    return slots_.back().get();
  }

  Batch NewBatch() { return Batch({}, absl::InfiniteFuture(), io_); }

  asio::io_context io_;
  PoolOptions options_;
  AdmissionQueue queue_{io_, 3};
  std::vector<std::unique_ptr<Caller>> callers_;
  std::vector<std::unique_ptr<WorkerSlot>> slots_;
};

TEST_F(AdmissionQueueTest, WorkersGoToCallersInTheOrderTheyCame) {
  EXPECT_FALSE(queue_.HandOver(NewSlot())) << "nobody waits";
  Caller& first = Queue();
  Caller& second = Queue();
  WorkerSlot* a = NewSlot();
  WorkerSlot* b = NewSlot();
  ASSERT_TRUE(queue_.HandOver(a));
  RunUntil([&] { return first.done; });
  EXPECT_EQ(first.turn.slot, a);
  EXPECT_FALSE(second.done);
  EXPECT_EQ(queue_.size(), 1);
  ASSERT_TRUE(queue_.HandOver(b));
  RunUntil([&] { return second.done; });
  EXPECT_EQ(second.turn.slot, b);
  EXPECT_TRUE(second.turn.failure.ok());
  EXPECT_TRUE(queue_.empty());
}

TEST_F(AdmissionQueueTest, ABatchPassesItsWorkerToACallerOfAnotherBatchFirst) {
  Batch batch = NewBatch();
  Caller& own_feeder = Queue(absl::InfiniteFuture(), &batch);
  Caller& other = Queue();
  EXPECT_TRUE(queue_.AnyWaitingBesides(batch));
  WorkerSlot* slot = NewSlot();
  ASSERT_TRUE(queue_.HandOver(slot, &batch));
  RunUntil([&] { return other.done; });
  EXPECT_EQ(other.turn.slot, slot);
  EXPECT_FALSE(own_feeder.done);
  // Only the batch's own feeder is left: it is not another caller, but a worker passed on
  // still goes to it rather than to nobody.
  EXPECT_FALSE(queue_.AnyWaitingBesides(batch));
  WorkerSlot* next = NewSlot();
  ASSERT_TRUE(queue_.HandOver(next, &batch));
  RunUntil([&] { return own_feeder.done; });
  EXPECT_EQ(own_feeder.turn.slot, next);
}

TEST_F(AdmissionQueueTest, FailAllWakesEveryCallerWithTheReason) {
  Caller& first = Queue();
  Caller& second = Queue();
  queue_.FailAll(absl::UnavailableError("no worker is running"));
  EXPECT_TRUE(queue_.empty());
  RunUntil([&] { return first.done && second.done; });
  for (Caller* caller : {&first, &second}) {
    EXPECT_EQ(caller->turn.slot, nullptr);
    EXPECT_EQ(caller->turn.failure, absl::UnavailableError("no worker is running"));
  }
  EXPECT_FALSE(queue_.HandOver(NewSlot()));
}

TEST_F(AdmissionQueueTest, ACallerWhoseDeadlinePassesLeavesTheQueueWithNeitherWorkerNorFailure) {
  Caller& hurried = Queue(absl::Now() + absl::Milliseconds(20));
  Caller& patient = Queue();
  RunUntil([&] { return hurried.done; });
  EXPECT_EQ(hurried.turn.slot, nullptr);
  EXPECT_TRUE(hurried.turn.failure.ok());
  EXPECT_FALSE(hurried.cancelled);
  EXPECT_EQ(queue_.size(), 1);
  // The next worker goes to the caller still waiting.
  WorkerSlot* slot = NewSlot();
  ASSERT_TRUE(queue_.HandOver(slot));
  RunUntil([&] { return patient.done; });
  EXPECT_EQ(patient.turn.slot, slot);
}

TEST_F(AdmissionQueueTest, ACancelledCallerLeavesTheQueueAndKnowsItWasCancelled) {
  Caller& leaving = Queue();
  Caller& staying = Queue();
  leaving.cancel.emit(asio::cancellation_type::terminal);
  RunUntil([&] { return leaving.done; });
  EXPECT_TRUE(leaving.cancelled);
  EXPECT_EQ(leaving.turn.slot, nullptr);
  EXPECT_EQ(queue_.size(), 1);
  EXPECT_FALSE(staying.done);
  WorkerSlot* slot = NewSlot();
  ASSERT_TRUE(queue_.HandOver(slot));
  RunUntil([&] { return staying.done; });
  EXPECT_EQ(staying.turn.slot, slot);
}

TEST_F(AdmissionQueueTest, IsFullAtItsCapacity) {
  EXPECT_FALSE(queue_.full());
  Queue();
  Queue();
  EXPECT_FALSE(queue_.full());
  Queue();
  EXPECT_TRUE(queue_.full());
  EXPECT_EQ(queue_.size(), 3);
  queue_.HandOver(NewSlot());
  EXPECT_FALSE(queue_.full());
  queue_.FailAll(absl::CancelledError("the test ends"));
  RunUntil([&] {
    for (const auto& caller : callers_) {
      if (!caller->done) return false;
    }
    return true;
  });
}

}  // namespace
}  // namespace cnp::pool
