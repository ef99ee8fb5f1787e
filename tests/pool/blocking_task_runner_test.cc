// BlockingTaskRunner (service/pool/blocking_task_runner.h) over the pool with fake workers, the
// pool's context on a thread of its own as in the server. A caller blocked in
// RunUnlessStopped whose stop is requested (its Upload was cancelled, or its deadline passed)
// gets CANCELLED at once, as a cancelled RPC's await of the pool does: its task is dropped if no
// worker had taken it, its worker killed and replaced if one had; a stop requested before the
// call sends nothing.
//
// What the pool has done is seen as it happens, never polled or slept for: the pool's thread
// runs its context one handler at a time and, after each, checks what the test waits for.
#include "service/pool/blocking_task_runner.h"

#include <chrono>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/metrics/service_metrics.h"
#include "service/pool/async_worker_pool.h"
#include "tests/pool/fake_worker.h"

namespace cnp::pool::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class BlockingTaskRunnerTest : public ::testing::Test {
 protected:
  void StartPool(int workers) {
    world_.script = [](const Task& task) {
      FakeStep step;
      if (NameOf(task) == "hang") step.kind = FakeStep::kHang;
      step.reply.mutable_validate();
      return step;
    };
    PoolOptions options;
    options.workers = workers;
    pool_ = std::make_unique<AsyncWorkerPool>(options, std::make_unique<FakeWorkerFactory>(world_),
                                              io_);
    ASSERT_TRUE(pool_->Start().ok());
    pool_thread_ = std::thread([this] { RunPool(); });
    runner_.emplace(*pool_, io_);
  }

  // The pool's thread: the context's handlers one at a time, and after each the conditions
  // tests wait for (PoolReaches), checked there, where the pool and the fake world live.
  void RunPool() {
    while (io_.run_one() > 0) {
      for (auto it = waits_.begin(); it != waits_.end();) {
        if ((*it)->done()) {
          (*it)->reached.set_value();
          it = waits_.erase(it);
        } else {
          ++it;
        }
      }
    }
  }

  // Runs `f` on the pool's thread, where the fake world is touched, and returns its result.
  template <class F>
  auto OnPool(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    asio::post(io_, [&task] { task(); });
    return result.get();
  }

  // Waits until `done` holds on the pool's thread (10 s at most): checked there once at once,
  // then after every handler the pool runs, until it holds.
  bool PoolReaches(std::function<bool()> done) {
    auto wait = std::make_shared<Wait>();
    wait->done = std::move(done);
    std::future<void> reached = wait->reached.get_future();
    asio::post(io_, [this, wait] { waits_.push_back(wait); });
    return reached.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  }

  void TearDown() override {
    if (pool_ == nullptr) return;
    pool_->Shutdown();
    // The killed workers are reaped before the context stops.
    EXPECT_TRUE(PoolReaches([this] { return world_.Alive() == 0; }));
    work_.reset();
    io_.stop();
    pool_thread_.join();
  }

  struct Wait {
    std::function<bool()> done;
    std::promise<void> reached;
  };

  // The world outlives the context: coroutines the context still holds own fake workers.
  FakeWorld world_;
  // What PoolReaches waits for; touched on the pool's thread only.
  std::list<std::shared_ptr<Wait>> waits_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::unique_ptr<AsyncWorkerPool> pool_;
  std::thread pool_thread_;
  std::optional<BlockingTaskRunner> runner_;
};

TEST_F(BlockingTaskRunnerTest, AStopMidTaskEndsTheWaitAndReplacesTheWorker) {
  ASSERT_NO_FATAL_FAILURE(StartPool(1));
  std::stop_source stop;
  std::thread stopper([&] {
    EXPECT_TRUE(PoolReaches([this] { return !world_.running.empty(); }));
    stop.request_stop();
  });
  absl::StatusOr<Reply> reply =
      runner_->RunUnlessStopped(TaskNamed("hang"), absl::InfiniteFuture(), stop.get_token());
  stopper.join();
  EXPECT_TRUE(absl::IsCancelled(reply.status())) << reply.status();
  EXPECT_THAT(reply.status().message(), HasSubstr("its worker was killed"));
  // The replacement serves the next caller.
  absl::StatusOr<Reply> next = runner_->Run(TaskNamed("a"), absl::Now() + absl::Seconds(10));
  EXPECT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(OnPool([this] { return world_.killed.size(); }), 1u);
  EXPECT_EQ(OnPool([this] { return world_.start_attempts; }), 2);
}

TEST_F(BlockingTaskRunnerTest, AStopWhileQueuedDropsTheTask) {
  ASSERT_NO_FATAL_FAILURE(StartPool(1));
  std::stop_source busy_stop;
  absl::StatusOr<Reply> busy_reply;
  std::thread busy([&] {
    busy_reply =
        runner_->RunUnlessStopped(TaskNamed("hang"), absl::InfiniteFuture(), busy_stop.get_token());
  });
  ASSERT_TRUE(PoolReaches([this] { return !world_.running.empty(); }));

  // The pool's admission queue, as its metric counts it (cnp_queue_depth): the one worker is
  // busy, so the next task waits there.
  const int64_t depth = metrics::QueueDepth().value();
  std::stop_source stop;
  bool was_queued = false;
  std::thread stopper([&] {
    was_queued = PoolReaches([depth] { return metrics::QueueDepth().value() == depth + 1; });
    stop.request_stop();
  });
  absl::StatusOr<Reply> queued =
      runner_->RunUnlessStopped(TaskNamed("queued"), absl::InfiniteFuture(), stop.get_token());
  stopper.join();
  EXPECT_TRUE(was_queued) << "the task never reached the pool's queue";
  EXPECT_TRUE(absl::IsCancelled(queued.status())) << queued.status();
  // Dropped from the queue, not left in it for the busy worker to take.
  EXPECT_TRUE(PoolReaches([depth] { return metrics::QueueDepth().value() == depth; }));

  busy_stop.request_stop();
  busy.join();
  EXPECT_TRUE(absl::IsCancelled(busy_reply.status())) << busy_reply.status();
  EXPECT_THAT(OnPool([this] { return world_.tasks_seen; }), ElementsAre("hang"));
}

TEST_F(BlockingTaskRunnerTest, AStopRequestedBeforehandSendsNothing) {
  ASSERT_NO_FATAL_FAILURE(StartPool(1));
  std::stop_source stop;
  stop.request_stop();
  absl::StatusOr<Reply> reply =
      runner_->RunUnlessStopped(TaskNamed("a"), absl::InfiniteFuture(), stop.get_token());
  EXPECT_TRUE(absl::IsCancelled(reply.status())) << reply.status();
  EXPECT_TRUE(OnPool([this] { return world_.tasks_seen.empty(); }));
}

}  // namespace
}  // namespace cnp::pool::testing
