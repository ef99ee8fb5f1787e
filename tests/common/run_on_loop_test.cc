// RunOnLoop (service/common/run_on_loop.h): work reaches the loop's thread from outside it, and
// runs at once where posting would wait for ever (on the loop's thread, with the loop stopped).
#include "service/common/run_on_loop.h"

#include <thread>

#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "gtest/gtest.h"

namespace cnp {
namespace {

TEST(RunOnLoopTest, FromAnotherThreadItRunsOnTheLoopsThreadAndHasRunOnReturn) {
  asio::io_context loop;
  auto guard = asio::make_work_guard(loop);
  std::thread runner([&loop] { loop.run(); });
  std::thread::id ran_on;
  RunOnLoop(loop, [&ran_on] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, runner.get_id());
  guard.reset();
  runner.join();
}

TEST(RunOnLoopTest, OnTheLoopsOwnThreadItRunsAtOnce) {
  asio::io_context loop;
  bool ran = false;
  bool ran_before_return = false;
  asio::post(loop, [&] {
    RunOnLoop(loop, [&ran] { ran = true; });
    ran_before_return = ran;  // a post would have run only after this handler
  });
  loop.run();
  EXPECT_TRUE(ran_before_return);
}

TEST(RunOnLoopTest, WithTheLoopStoppedItRunsAtOnce) {
  asio::io_context loop;
  loop.stop();
  std::thread::id ran_on;
  RunOnLoop(loop, [&ran_on] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

}  // namespace
}  // namespace cnp
