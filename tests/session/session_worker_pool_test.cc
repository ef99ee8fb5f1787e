// The session worker pool's rules, with a stand-in worker (fake_worker.py): spares kept ready,
// the --max-sessions cap, reuse after a clean session, replacement after a bad one, and SIGHUP
// (Reload): spares replaced at once, a worker in a session when its session ends.
#include "service/session/session_worker_pool.h"

#include <signal.h>

#include <cerrno>
#include <optional>

#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "gtest/gtest.h"

namespace cnp::session {
namespace {

SessionPoolOptions Options(int max_sessions, int spares) {
  SessionPoolOptions options;
  options.command = {"/usr/bin/python3.11", {"tests/support/fake_worker.py"}};
  options.max_sessions = max_sessions;
  options.spare_workers = spares;
  options.startup_timeout = absl::Seconds(30);
  return options;
}

bool Alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

class SessionWorkerPoolTest : public ::testing::Test {
 protected:
  // Runs the loop until the pool holds `count` spares.
  void WaitForSpares(SessionWorkerPool& pool, size_t count) {
    while (pool.spare_pids().size() < count) io_.run_one();
  }

  // Take() run to completion on the loop.
  absl::StatusOr<SessionWorker> Take(SessionWorkerPool& pool) {
    std::optional<absl::StatusOr<SessionWorker>> result;
    asio::co_spawn(
        io_, [&pool, &result]() -> asio::awaitable<void> { result = co_await pool.Take(); },
        asio::detached);
    while (!result.has_value()) io_.run_one();
    return std::move(*result);
  }

  // Shutdown() as the server calls it, from the loop's thread (here the only thread).
  void Shutdown(SessionWorkerPool& pool) {
    bool done = false;
    asio::post(io_, [&pool, &done] {
      pool.Shutdown();
      done = true;
    });
    while (!done) io_.run_one();
  }

  asio::io_context io_;
};

TEST_F(SessionWorkerPoolTest, KeepsASpareAndReusesAWorkerAfterACleanSession) {
  SessionWorkerPool pool(Options(/*max_sessions=*/1, /*spares=*/1), io_);
  pool.Start();
  WaitForSpares(pool, 1);
  const pid_t spare = pool.spare_pids()[0];

  absl::StatusOr<SessionWorker> first = Take(pool);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->process->pid(), spare);  // no wait for a start
  EXPECT_EQ(pool.sessions(), 1);

  absl::StatusOr<SessionWorker> second = Take(pool);
  EXPECT_TRUE(absl::IsResourceExhausted(second.status())) << second.status();

  pool.Return(std::move(*first), /*reusable=*/true);
  EXPECT_EQ(pool.sessions(), 0);
  ASSERT_EQ(pool.spare_pids().size(), 1u);
  EXPECT_EQ(pool.spare_pids()[0], spare);
  Shutdown(pool);
}

TEST_F(SessionWorkerPoolTest, AWorkerWhoseSessionEndedBadlyIsReplaced) {
  SessionWorkerPool pool(Options(/*max_sessions=*/2, /*spares=*/1), io_);
  pool.Start();
  WaitForSpares(pool, 1);
  absl::StatusOr<SessionWorker> taken = Take(pool);
  ASSERT_TRUE(taken.ok()) << taken.status();
  const pid_t used = taken->process->pid();
  pool.Return(std::move(*taken), /*reusable=*/false);
  EXPECT_FALSE(Alive(used));
  WaitForSpares(pool, 1);
  EXPECT_NE(pool.spare_pids()[0], used);
  Shutdown(pool);
}

TEST_F(SessionWorkerPoolTest, ReloadReplacesSparesAtOnceAndSessionWorkersAfterTheirSession) {
  SessionWorkerPool pool(Options(/*max_sessions=*/3, /*spares=*/1), io_);
  pool.Start();
  WaitForSpares(pool, 1);
  absl::StatusOr<SessionWorker> busy = Take(pool);
  ASSERT_TRUE(busy.ok()) << busy.status();
  WaitForSpares(pool, 1);
  const pid_t old_spare = pool.spare_pids()[0];

  pool.Reload();
  EXPECT_FALSE(Alive(old_spare));
  EXPECT_TRUE(Alive(busy->process->pid()));  // its session goes on
  WaitForSpares(pool, 1);
  const pid_t new_spare = pool.spare_pids()[0];
  EXPECT_NE(new_spare, old_spare);

  const pid_t busy_pid = busy->process->pid();
  pool.Return(std::move(*busy), /*reusable=*/true);
  EXPECT_FALSE(Alive(busy_pid));  // started before the reload: not kept
  EXPECT_EQ(pool.spare_pids(), std::vector<pid_t>{new_spare});
  Shutdown(pool);
}

TEST_F(SessionWorkerPoolTest, NoSessionsWhenTheCapIsZero) {
  SessionWorkerPool pool(Options(/*max_sessions=*/0, /*spares=*/1), io_);
  pool.Start();
  absl::StatusOr<SessionWorker> taken = Take(pool);
  EXPECT_TRUE(absl::IsResourceExhausted(taken.status())) << taken.status();
  EXPECT_TRUE(pool.spare_pids().empty());
}

}  // namespace
}  // namespace cnp::session
