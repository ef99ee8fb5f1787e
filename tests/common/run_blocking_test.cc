// RunBlocking (service/common/run_blocking.h): blocking work on a thread pool, awaited from an
// io_context. Its result comes back on the awaiting side; a cancellation requests the work's
// stop and waits for it; one that comes while the work still waits for a thread is answered at
// once, and the work never runs (an Upload gone before its turn holds no place).
#include "service/common/run_blocking.h"

#include <atomic>
#include <chrono>
#include <future>
#include <optional>
#include <string>
#include <thread>

#include "asio/bind_cancellation_slot.hpp"
#include "asio/bind_executor.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "asio/thread_pool.hpp"
#include "gtest/gtest.h"

namespace cnp {
namespace {

class RunBlockingTest : public ::testing::Test {
 protected:
  // Starts `work` on the pool, its result awaited on `loop_` with `cancel_` as its slot.
  template <class Work>
  void Start(Work work) {
    RunBlocking(pool_.get_executor(), std::move(work), std::string("not started"),
                asio::bind_cancellation_slot(
                    cancel_.slot(), asio::bind_executor(loop_, [this](std::string result) {
                      result_ = std::move(result);
                      result_thread_ = std::this_thread::get_id();
                    })));
  }

  // Runs `loop_` on this thread until the result is there (10 s at most).
  bool AwaitResult() {
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!result_.has_value() && std::chrono::steady_clock::now() < limit) {
      loop_.run_for(std::chrono::milliseconds(10));
      if (loop_.stopped()) loop_.restart();
    }
    return result_.has_value();
  }

  asio::io_context loop_;
  asio::thread_pool pool_{1};
  asio::cancellation_signal cancel_;
  std::optional<std::string> result_;
  std::thread::id result_thread_;
};

TEST_F(RunBlockingTest, TheResultComesBackOnTheAwaitingSide) {
  std::thread::id worked_on;
  Start([&worked_on](std::stop_token) {
    worked_on = std::this_thread::get_id();
    return std::string("done");
  });
  ASSERT_TRUE(AwaitResult());
  EXPECT_EQ(*result_, "done");
  EXPECT_EQ(result_thread_, std::this_thread::get_id());
  EXPECT_NE(worked_on, std::this_thread::get_id());
  pool_.join();
}

TEST_F(RunBlockingTest, CancellingRunningWorkRequestsItsStopAndAwaitsItsResult) {
  std::promise<void> running;
  Start([&running](std::stop_token stop) {
    running.set_value();
    while (!stop.stop_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return std::string("stopped");
  });
  running.get_future().wait();
  cancel_.emit(asio::cancellation_type::terminal);
  ASSERT_TRUE(AwaitResult());
  EXPECT_EQ(*result_, "stopped");
  pool_.join();
}

TEST_F(RunBlockingTest, WorkCancelledBeforeAThreadTookItUpIsAnsweredAtOnceAndNeverRuns) {
  // The pool's one thread is busy until the end of the test.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  asio::post(pool_, [released] { released.wait(); });
  std::atomic<bool> ran{false};
  Start([&ran](std::stop_token) {
    ran = true;
    return std::string("ran");
  });
  loop_.poll();
  cancel_.emit(asio::cancellation_type::terminal);
  // Answered while the thread is still busy: no waiting for it.
  ASSERT_TRUE(AwaitResult());
  EXPECT_EQ(*result_, "not started");
  EXPECT_EQ(result_thread_, std::this_thread::get_id());
  release.set_value();
  pool_.join();
  EXPECT_FALSE(ran);
}

}  // namespace
}  // namespace cnp
