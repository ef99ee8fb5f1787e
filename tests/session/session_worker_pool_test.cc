// The session worker pool's rules, with a stand-in worker (fake_worker.py): spares kept ready,
// the --max-sessions cap, reuse after a clean session, replacement after a bad one, and SIGHUP
// (Reload): spares replaced at once, a worker in a session when its session ends; a spare that
// dies replaced without a session asking; and a worker's start that never holds the control loop.
#include "service/session/session_worker_pool.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "asio/steady_timer.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/metrics/registry.h"
#include "tests/support/files.h"

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

// A series' value in a scrape of the process's metrics now (0 when it has none), e.g.
// Metric("cnp_worker_exits_total{cause=\"crash\",pool=\"session\"}").
int64_t Metric(const std::string& series) {
  for (absl::string_view line : absl::StrSplit(metrics::Registry::Default().Render(), '\n')) {
    int64_t value = 0;
    if (absl::ConsumePrefix(&line, series + " ") && absl::SimpleAtoi(line, &value)) return value;
  }
  return 0;
}

bool Alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

class SessionWorkerPoolTest : public ::testing::Test {
 protected:
  // Runs the loop until the pool holds `count` spares.
  void WaitForSpares(SessionWorkerPool& pool, size_t count) {
    while (pool.spare_pids().size() < count) io_.run_one();
  }

  // Runs the loop until the pool has killed and reaped `pid` (it awaits the end on a pidfd);
  // a worker the pool never ends keeps this waiting until the test times out.
  void WaitUntilEnded(pid_t pid) {
    while (Alive(pid)) io_.run_one();
  }

  // Runs the loop until `done()` or `bound` has passed; false then.
  template <typename Done>
  bool RunUntil(Done done, absl::Duration bound) {
    const absl::Time give_up = absl::Now() + bound;
    while (!done()) {
      if (absl::Now() > give_up) return false;
      io_.run_one_for(std::chrono::milliseconds(100));
    }
    return true;
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

// --max-calls-per-worker counts a session worker's lines in all its sessions: one that has
// answered that many is replaced when its session ends, not kept as the spare (before, it was
// kept whatever it had served; a review).
TEST_F(SessionWorkerPoolTest, AWorkerPastMaxCallsInAllItsSessionsIsReplaced) {
  SessionPoolOptions options = Options(/*max_sessions=*/1, /*spares=*/1);
  options.max_calls_per_worker = 4;
  SessionWorkerPool pool(options, io_);
  pool.Start();
  WaitForSpares(pool, 1);
  absl::StatusOr<SessionWorker> first = Take(pool);
  ASSERT_TRUE(first.ok()) << first.status();
  const pid_t pid = first->process->pid();
  first->commands += 2;  // as the listener counts a session's SessionEnd.commands
  pool.Return(std::move(*first), /*reusable=*/true);
  ASSERT_EQ(pool.spare_pids(), std::vector<pid_t>{pid});  // 2 of 4: kept
  absl::StatusOr<SessionWorker> second = Take(pool);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->process->pid(), pid);
  second->commands += 2;
  pool.Return(std::move(*second), /*reusable=*/true);
  WaitUntilEnded(pid);  // 4 of 4: replaced
  WaitForSpares(pool, 1);
  EXPECT_NE(pool.spare_pids()[0], pid);
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
  WaitUntilEnded(used);
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
  WaitUntilEnded(old_spare);
  EXPECT_TRUE(Alive(busy->process->pid()));  // its session goes on
  WaitForSpares(pool, 1);
  const pid_t new_spare = pool.spare_pids()[0];
  EXPECT_NE(new_spare, old_spare);

  const pid_t busy_pid = busy->process->pid();
  pool.Return(std::move(*busy), /*reusable=*/true);
  WaitUntilEnded(busy_pid);  // started before the reload: not kept
  EXPECT_EQ(pool.spare_pids(), std::vector<pid_t>{new_spare});
  Shutdown(pool);
}

// A storm of SIGHUPs while the spare of the first reload starts, and one more once it has
// started, restart the spare twice (the reload and one merged reload after it), not once per
// signal; and the last of them is not lost. Before, each Reload() replaced the spares at once:
// the half-started spare was discarded and another started, and the signal after it replaced
// that one too.
TEST_F(SessionWorkerPoolTest, AStormOfReloadsRestartsTheSpareTwice) {
  const std::string dir = testing::MakeTempDir("storm");
  const std::string starts = dir + "/starts";
  const std::string gate = dir + "/gate";
  ASSERT_EQ(::mkfifo(gate.c_str(), 0600), 0);
  // Held open for writing, so that a worker's open for reading never waits; a worker starts
  // only once the test has written it a byte.
  const int gate_fd = ::open(gate.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(gate_fd, 0);
  auto let_one_start = [gate_fd] { ASSERT_EQ(::write(gate_fd, "g", 1), 1); };
  SessionPoolOptions options = Options(/*max_sessions=*/2, /*spares=*/1);
  options.reload_quiet = absl::Milliseconds(300);
  // Notes its start, waits at the gate, then is the ordinary stand-in worker.
  options.command = {
      "/usr/bin/python3.11",
      {"-c",
       "import os, runpy, sys\n"
       "open(sys.argv[1], 'a').write('started\\n')\n"
       "os.read(os.open(sys.argv[2], os.O_RDONLY), 1)\n"
       "sys.argv = sys.argv[3:]\n"
       "runpy.run_path(sys.argv[0], run_name='__main__')\n",
       starts, gate, "tests/support/fake_worker.py"}};
  auto started = [&starts] {
    const std::string text = testing::ReadFile(starts);
    return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
  };
  SessionWorkerPool pool(std::move(options), io_);
  let_one_start();
  pool.Start();
  WaitForSpares(pool, 1);
  const pid_t first = pool.spare_pids()[0];

  pool.Reload();  // replaces `first` at once
  ASSERT_TRUE(RunUntil([&] { return started() == 2; }, absl::Seconds(20)));
  for (int i = 0; i < 50; ++i) {  // while its replacement waits at the gate
    pool.Reload();
    io_.poll();
  }
  let_one_start();
  ASSERT_TRUE(RunUntil([&] { return pool.spare_pids().size() == 1; }, absl::Seconds(20)))
      << "no spare after the storm";
  const pid_t second = pool.spare_pids()[0];
  EXPECT_NE(second, first);
  pool.Reload();  // once it has started: merged as well
  let_one_start();

  // The merged reload replaces `second` once the requests have stopped for reload_quiet.
  ASSERT_TRUE(RunUntil(
      [&] {
        const std::vector<pid_t> spares = pool.spare_pids();
        return spares.size() == 1 && spares[0] != second && !Alive(second);
      },
      absl::Seconds(20)))
      << started() << " starts; the merged reload did not replace the spare";
  // Let any further (wrong) reload show itself: a few quiet periods with nothing due.
  RunUntil([] { return false; }, absl::Seconds(1));
  EXPECT_EQ(started(), 3) << "the initial spare, the reload's, the merged reload's";
  ::close(gate_fd);
  Shutdown(pool);
}

// A spare that dies while it waits (the OOM killer, an operator's kill) is reaped and replaced
// at once; before, it lay dead (a zombie) among the spares until a session took it.
TEST_F(SessionWorkerPoolTest, ASpareThatDiesIsReplacedWithoutASessionAsking) {
  SessionWorkerPool pool(Options(/*max_sessions=*/2, /*spares=*/1), io_);
  pool.Start();
  WaitForSpares(pool, 1);
  const pid_t dead = pool.spare_pids()[0];
  ASSERT_EQ(::kill(dead, SIGKILL), 0);

  // Alive() holds for a zombie too: this waits for the pool to reap it.
  ASSERT_TRUE(RunUntil([&] { return !Alive(dead); }, absl::Seconds(20)))
      << "the dead spare was not noticed";
  ASSERT_TRUE(RunUntil(
      [&] {
        std::vector<pid_t> spares = pool.spare_pids();
        return spares.size() == 1 && spares[0] != dead;
      },
      absl::Seconds(20)))
      << "the dead spare was not replaced";
  const pid_t replacement = pool.spare_pids()[0];

  absl::StatusOr<SessionWorker> taken = Take(pool);
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(taken->process->pid(), replacement);
  pool.Return(std::move(*taken), /*reusable=*/true);
  Shutdown(pool);
}

// Spares that keep dying soon after their start are replaced, each later than the last (200 ms,
// 400 ms, 800 ms after the death), not restarted in a loop.
TEST_F(SessionWorkerPoolTest, SparesThatKeepDyingAreReplacedWithAGrowingBackoff) {
  const std::string starts = testing::MakeTempDir("starts") + "/starts";
  SessionPoolOptions options = Options(/*max_sessions=*/1, /*spares=*/1);
  // Notes when it started, answers the startup handshake (Reply{resolve: {}, sequence: 1}: the
  // handshake is the first task), and exits.
  options.command = {
      "/usr/bin/python3.11",
      {"-c",
       "import os, struct, sys, time\n"
       "open(sys.argv[1], 'a').write('%f\\n' % time.monotonic())\n"
       "(n,) = struct.unpack('<I', os.read(3, 4)); os.read(3, n)\n"
       "os.write(3, b'\\x05\\0\\0\\0\\x2a\\0\\x80\\x01\\x01')\n",
       starts}};
  SessionWorkerPool pool(std::move(options), io_);
  pool.Start();

  std::vector<double> started;
  ASSERT_TRUE(RunUntil(
      [&] {
        started.clear();
        for (absl::string_view line : absl::StrSplit(testing::ReadFile(starts), '\n',
                                                      absl::SkipEmpty())) {
          double at = 0;
          if (absl::SimpleAtod(line, &at)) started.push_back(at);
        }
        return started.size() >= 4;
      },
      absl::Seconds(30)))
      << "the dying spares were not replaced: " << started.size() << " started";
  // The gap between two starts is the backoff plus a start and a death.
  EXPECT_GE(started[1] - started[0], 0.2);
  EXPECT_GE(started[2] - started[1], 0.4);
  EXPECT_GE(started[3] - started[2], 0.8);
  Shutdown(pool);
}

// A worker is started as the batch pool starts one: its handshake is awaited, so the control
// loop goes on serving everything else meanwhile, even when the worker stalls in the middle of
// its answer (before, the rest of the answer was read with a blocking receive that held the
// loop for up to 5 s).
TEST_F(SessionWorkerPoolTest, AStallingWorkerStartDoesNotHoldTheLoop) {
  SessionPoolOptions options = Options(/*max_sessions=*/1, /*spares=*/0);
  // Announces a 16-byte answer on its socket (fd 3), then never sends it.
  options.command = {"/usr/bin/python3.11",
                     {"-c", "import os, time; os.write(3, b'\\x10\\0\\0\\0'); time.sleep(600)"}};
  // Long enough that a held loop (the timer firing only once the start failed, ~8 s late) stands
  // far from the bound below, which leaves a shared, loaded CI machine seconds of slack.
  options.startup_timeout = absl::Seconds(8);
  SessionWorkerPool pool(std::move(options), io_);
  pool.Start();

  std::optional<absl::Duration> timer_late;
  asio::steady_timer timer(io_, std::chrono::milliseconds(200));
  const absl::Time due = absl::Now() + absl::Milliseconds(200);
  timer.async_wait([&timer_late, due](asio::error_code) { timer_late = absl::Now() - due; });

  absl::StatusOr<SessionWorker> taken = Take(pool);
  EXPECT_TRUE(absl::IsUnavailable(taken.status())) << taken.status();
  EXPECT_THAT(std::string(taken.status().message()), ::testing::HasSubstr("did not answer within 8s"));
  ASSERT_TRUE(timer_late.has_value());
  EXPECT_LT(*timer_late, absl::Seconds(4)) << "the loop was held while the worker started";
  EXPECT_EQ(pool.sessions(), 0);
}

// A stand-in worker that does not finish starting while `hold` exists (it stands for a slow
// interpreter start on a busy machine), then answers as fake_worker.py.
std::vector<std::string> HeldWorkerArgs(const std::string& hold) {
  return {"-c", absl::StrCat("import os, sys, time\n"
                             "while os.path.exists('", hold, "'):\n"
                             "    time.sleep(0.01)\n"
                             "os.execv(sys.executable, [sys.executable, "
                             "'tests/support/fake_worker.py'])\n")};
}

bool MakeFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

// CouchDB starting many query servers at once: the sessions wait for workers that start at
// most max_parallel_starts at a time (each start had its own, and sixty of them on a busy
// machine left most sessions without a worker within CouchDB's timeout), and each gets one.
TEST_F(SessionWorkerPoolTest, SessionsThatArriveTogetherShareABoundedNumberOfStarts) {
  const std::string hold = ::cnp::testing::ShortTempDir() + "/hold";
  ASSERT_TRUE(MakeFile(hold));
  SessionPoolOptions options = Options(/*max_sessions=*/10, /*spares=*/0);
  options.command.args = HeldWorkerArgs(hold);
  options.max_parallel_starts = 2;
  SessionWorkerPool pool(std::move(options), io_);
  pool.Start();

  constexpr int kSessions = 6;
  std::vector<std::optional<absl::StatusOr<SessionWorker>>> taken(kSessions);
  for (auto& result : taken) {
    asio::co_spawn(
        io_, [&pool, &result]() -> asio::awaitable<void> { result = co_await pool.Take(); },
        asio::detached);
  }
  ASSERT_TRUE(RunUntil([&] { return pool.waiting_sessions() == kSessions; }, absl::Seconds(30)));
  EXPECT_EQ(pool.starts_in_flight(), 2);

  ASSERT_EQ(::unlink(hold.c_str()), 0);
  int most_starting = 0;
  ASSERT_TRUE(RunUntil(
      [&] {
        most_starting = std::max(most_starting, pool.starts_in_flight());
        return std::all_of(taken.begin(), taken.end(), [](const auto& r) { return r.has_value(); });
      },
      absl::Seconds(60)));
  EXPECT_LE(most_starting, 2);
  std::set<pid_t> pids;
  for (auto& result : taken) {
    ASSERT_TRUE(result->ok()) << result->status();
    pids.insert((*result)->process->pid());
  }
  EXPECT_EQ(pids.size(), static_cast<size_t>(kSessions));
  EXPECT_EQ(pool.sessions(), kSessions);
  EXPECT_EQ(pool.waiting_sessions(), 0u);
  Shutdown(pool);
}

// A session that no worker is ready for by its deadline is told so in time (its adapter then
// serves CouchDB over the Session stream), and the worker that was starting for it serves the
// next session instead of being thrown away.
TEST_F(SessionWorkerPoolTest, ASessionNotServedByItsDeadlineIsUnavailableInTime) {
  const std::string hold = ::cnp::testing::ShortTempDir() + "/hold";
  ASSERT_TRUE(MakeFile(hold));
  SessionPoolOptions options = Options(/*max_sessions=*/4, /*spares=*/1);
  options.command.args = HeldWorkerArgs(hold);
  options.max_parallel_starts = 1;
  SessionWorkerPool pool(std::move(options), io_);
  pool.Start();

  std::optional<absl::StatusOr<SessionWorker>> late;
  const absl::Time deadline = absl::Now() + absl::Milliseconds(300);
  asio::co_spawn(
      io_,
      [&pool, &late, deadline]() -> asio::awaitable<void> { late = co_await pool.Take(deadline); },
      asio::detached);
  ASSERT_TRUE(RunUntil([&] { return late.has_value(); }, absl::Seconds(30)));
  EXPECT_GE(absl::Now(), deadline);
  EXPECT_TRUE(absl::IsUnavailable(late->status())) << late->status();
  EXPECT_THAT(std::string(late->status().message()),
              ::testing::HasSubstr("no session worker was ready in time"));
  EXPECT_EQ(pool.sessions(), 0);
  EXPECT_EQ(pool.starts_in_flight(), 1);  // still starting, for whoever comes next

  ASSERT_EQ(::unlink(hold.c_str()), 0);
  WaitForSpares(pool, 1);
  const pid_t spare = pool.spare_pids()[0];
  absl::StatusOr<SessionWorker> next = Take(pool);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->process->pid(), spare);
  Shutdown(pool);
}

// A worker whose session ended cleanly while the next spare was still starting: one spare is
// kept, not two (the returned worker was kept without counting the start in progress).
TEST_F(SessionWorkerPoolTest, AWorkerReturnedWhileASpareStartsLeavesOneSpare) {
  const std::string hold = ::cnp::testing::ShortTempDir() + "/hold";
  SessionPoolOptions options = Options(/*max_sessions=*/3, /*spares=*/1);
  options.command.args = HeldWorkerArgs(hold);
  SessionWorkerPool pool(std::move(options), io_);
  pool.Start();
  WaitForSpares(pool, 1);

  ASSERT_TRUE(MakeFile(hold));
  absl::StatusOr<SessionWorker> taken = Take(pool);
  ASSERT_TRUE(taken.ok()) << taken.status();
  const pid_t returned = taken->process->pid();
  ASSERT_TRUE(RunUntil([&] { return pool.starts_in_flight() == 1; }, absl::Seconds(30)));
  pool.Return(std::move(*taken), /*reusable=*/true);

  ASSERT_EQ(::unlink(hold.c_str()), 0);
  ASSERT_TRUE(RunUntil([&] { return pool.starts_in_flight() == 0; }, absl::Seconds(60)));
  EXPECT_THAT(pool.spare_pids(), ::testing::ElementsAre(returned));
  Shutdown(pool);
}

// A stand-in worker held while `hold` exists, that then fails its start once if `fail` exists
// (taking the file away), and otherwise answers as fake_worker.py.
std::vector<std::string> HeldFailingOnceWorkerArgs(const std::string& hold,
                                                   const std::string& fail) {
  return {"-c", absl::StrCat("import os, sys, time\n"
                             "while os.path.exists('", hold, "'):\n"
                             "    time.sleep(0.01)\n"
                             "try:\n"
                             "    os.unlink('", fail, "')\n"
                             "    sys.exit(1)\n"
                             "except FileNotFoundError:\n"
                             "    pass\n"
                             "os.execv(sys.executable, [sys.executable, "
                             "'tests/support/fake_worker.py'])\n")};
}

// A session that came while a spare was starting counted on that start (it started none of its
// own); when the spare's start failed, nothing started for it, and at the cap (no more spares
// wanted) it waited until its deadline. Now it gets a start of its own at once.
TEST_F(SessionWorkerPoolTest, ASessionWaitingOnASpareThatFailsToStartGetsAStartOfItsOwn) {
  const std::string dir = ::cnp::testing::ShortTempDir();
  const std::string hold = dir + "/hold", fail = dir + "/fail";
  ASSERT_TRUE(MakeFile(hold));
  ASSERT_TRUE(MakeFile(fail));
  SessionPoolOptions options = Options(/*max_sessions=*/1, /*spares=*/1);
  options.command.args = HeldFailingOnceWorkerArgs(hold, fail);
  SessionWorkerPool pool(std::move(options), io_);
  pool.Start();
  ASSERT_TRUE(RunUntil([&] { return pool.starts_in_flight() == 1; }, absl::Seconds(30)));

  std::optional<absl::StatusOr<SessionWorker>> taken;
  asio::co_spawn(
      io_, [&pool, &taken]() -> asio::awaitable<void> { taken = co_await pool.Take(); },
      asio::detached);
  ASSERT_TRUE(RunUntil([&] { return pool.waiting_sessions() == 1; }, absl::Seconds(30)));
  EXPECT_EQ(pool.starts_in_flight(), 1) << "the spare's start serves the session";

  ASSERT_EQ(::unlink(hold.c_str()), 0);  // the spare's start fails; the next one works
  ASSERT_TRUE(RunUntil([&] { return taken.has_value(); }, absl::Seconds(30)))
      << "the session still waits";
  ASSERT_TRUE(taken->ok()) << taken->status();
  EXPECT_EQ(pool.sessions(), 1);
  Shutdown(pool);
}

// A worker that died during its session and was given back as reusable (it died just as its
// session ended well): its spare's watch had already seen it end while it was away, so kept as
// a spare it was watched by nobody, a zombie in the place of a live spare until a session took
// it. It is ended instead.
TEST_F(SessionWorkerPoolTest, AWorkerThatDiedInItsSessionIsNotKeptAsASpare) {
  SessionWorkerPool pool(Options(/*max_sessions=*/2, /*spares=*/1), io_);
  pool.Start();
  WaitForSpares(pool, 1);
  absl::StatusOr<SessionWorker> taken = Take(pool);
  ASSERT_TRUE(taken.ok()) << taken.status();
  const pid_t died = taken->process->pid();
  ASSERT_EQ(::kill(died, SIGKILL), 0);
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, died, &info, WEXITED | WNOWAIT), 0);  // dead, not reaped
  const int64_t crashes = Metric("cnp_worker_exits_total{cause=\"crash\",pool=\"session\"}");

  pool.Return(std::move(*taken), /*reusable=*/true);
  EXPECT_THAT(pool.spare_pids(), ::testing::Not(::testing::Contains(died)));
  WaitUntilEnded(died);  // reaped
  EXPECT_EQ(Metric("cnp_worker_exits_total{cause=\"crash\",pool=\"session\"}"), crashes + 1);
  WaitForSpares(pool, 1);
  EXPECT_NE(pool.spare_pids()[0], died);
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

namespace cnp::session {
namespace {

// Session workers are counted with the batch pool's workers, under pool="session": their
// starts, a spare's death (crash), a reload's replacements (reload), one over its memory cap
// (memory) and one not kept because enough spares wait (surplus); and their resident memory is
// exported as a sum and a maximum. Before, none of it moved.
TEST_F(SessionWorkerPoolTest, SessionWorkersAreCountedInTheWorkerMetrics) {
  const std::string starts = "cnp_worker_starts_total{pool=\"session\"}";
  auto exits = [](const char* cause) {
    return Metric(absl::StrCat("cnp_worker_exits_total{cause=\"", cause, "\",pool=\"session\"}"));
  };
  const int64_t started_before = Metric(starts);
  const int64_t crashed_before = exits("crash");
  const int64_t reloaded_before = exits("reload");
  const int64_t memory_before = exits("memory");
  const int64_t surplus_before = exits("surplus");

  SessionPoolOptions options = Options(/*max_sessions=*/3, /*spares=*/1);
  options.memory_check_interval = absl::Milliseconds(50);
  SessionWorkerPool pool(options, io_);
  pool.Start();
  WaitForSpares(pool, 1);
  EXPECT_EQ(Metric(starts) - started_before, 1);

  // Resident memory: the spare's, as the sum and as the largest.
  ASSERT_TRUE(RunUntil(
      [] { return Metric("cnp_session_workers_resident_bytes{stat=\"max\"}") > 0; },
      absl::Seconds(10)));
  EXPECT_GE(Metric("cnp_session_workers_resident_bytes{stat=\"sum\"}"),
            Metric("cnp_session_workers_resident_bytes{stat=\"max\"}"));

  // A spare killed while it waits.
  const pid_t dead = pool.spare_pids()[0];
  ASSERT_EQ(::kill(dead, SIGKILL), 0);
  ASSERT_TRUE(RunUntil([&] { return exits("crash") - crashed_before == 1; }, absl::Seconds(20)));
  ASSERT_TRUE(RunUntil([&] { return pool.spare_pids().size() == 1; }, absl::Seconds(20)));
  EXPECT_EQ(Metric(starts) - started_before, 2);

  // A reload replaces the spare.
  const pid_t old_spare = pool.spare_pids()[0];
  pool.Reload();
  WaitUntilEnded(old_spare);
  EXPECT_EQ(exits("reload") - reloaded_before, 1);
  WaitForSpares(pool, 1);

  // Two sessions, so that the second worker comes back to a full set of spares.
  absl::StatusOr<SessionWorker> first = Take(pool);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<SessionWorker> second = Take(pool);
  ASSERT_TRUE(second.ok()) << second.status();
  WaitForSpares(pool, 1);
  pool.Return(std::move(*first), /*reusable=*/true);
  EXPECT_EQ(exits("surplus") - surplus_before, 1);
  pool.Return(std::move(*second), /*reusable=*/true);
  EXPECT_EQ(exits("surplus") - surplus_before, 2);
  EXPECT_EQ(exits("memory") - memory_before, 0);
  EXPECT_EQ(exits("crash") - crashed_before, 1);
  Shutdown(pool);
}

int64_t SessionMemoryExits() {
  return Metric("cnp_worker_exits_total{cause=\"memory\",pool=\"session\"}");
}

// A worker grown in its session into the last eighth of its memory cap is replaced when the
// session ends, counted as a "memory" exit.
TEST_F(SessionWorkerPoolTest, AWorkerGrownNearItsMemoryCapIsCountedAsAMemoryExit) {
  const int64_t before = SessionMemoryExits();
  SessionPoolOptions options = Options(/*max_sessions=*/2, /*spares=*/0);
  options.command.args.push_back("--grow-on-sigusr1-mib=100");
  options.memory_cap_bytes = 64 << 20;
  SessionWorkerPool pool(options, io_);
  pool.Start();
  absl::StatusOr<SessionWorker> taken = Take(pool);
  ASSERT_TRUE(taken.ok()) << taken.status();
  const pid_t pid = taken->process->pid();
  const int64_t started = taken->process->StartedAddressSpaceBytes();
  ASSERT_GT(started, 0);
  ASSERT_EQ(::kill(pid, SIGUSR1), 0);
  ASSERT_TRUE(RunUntil(
      [&] { return pool::ProcessMemoryOf(pid).address_space_bytes >= started + (100 << 20); },
      absl::Seconds(20)));
  pool.Return(std::move(*taken), /*reusable=*/true);
  WaitUntilEnded(pid);
  EXPECT_EQ(SessionMemoryExits() - before, 1);
  Shutdown(pool);
}

// One that starts as large as that is not replaced for it (found by a review: every worker
// that starts near its cap, with a large --preload-module, was replaced, by another as large).
TEST_F(SessionWorkerPoolTest, AWorkerThatStartedNearItsMemoryCapIsNotAMemoryExit) {
  const int64_t before = SessionMemoryExits();
  SessionPoolOptions options = Options(/*max_sessions=*/2, /*spares=*/1);
  options.memory_cap_bytes = 1;  // every worker starts over it
  SessionWorkerPool pool(options, io_);
  pool.Start();
  absl::StatusOr<SessionWorker> taken = Take(pool);
  ASSERT_TRUE(taken.ok()) << taken.status();
  const pid_t pid = taken->process->pid();
  pool.Return(std::move(*taken), /*reusable=*/true);
  // Kept as the spare, or ended as a surplus one: either way not for its memory.
  ASSERT_TRUE(RunUntil(
      [&] {
        const std::vector<pid_t> spares = pool.spare_pids();
        return std::find(spares.begin(), spares.end(), pid) != spares.end() ||
               ::kill(pid, 0) != 0;
      },
      absl::Seconds(20)));
  EXPECT_EQ(SessionMemoryExits() - before, 0);
  Shutdown(pool);
}


// CouchDB's short-lived query servers: a session that takes the spare and ends at once gives
// its worker back as the spare. Before, taking the spare started its replacement at once, and
// the worker that came back a moment later made one of the two surplus: a worker started and
// killed ("enough spares are waiting") for every short session.
TEST_F(SessionWorkerPoolTest, AShortSessionStartsNoWorkerToThrowAway) {
  const std::string starts = "cnp_worker_starts_total{pool=\"session\"}";
  const std::string surplus = "cnp_worker_exits_total{cause=\"surplus\",pool=\"session\"}";
  SessionWorkerPool pool(Options(/*max_sessions=*/4, /*spares=*/1), io_);
  pool.Start();
  WaitForSpares(pool, 1);
  const pid_t spare = pool.spare_pids()[0];
  const int64_t started_before = Metric(starts);
  const int64_t surplus_before = Metric(surplus);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<SessionWorker> taken = Take(pool);
    ASSERT_TRUE(taken.ok()) << taken.status();
    EXPECT_EQ(taken->process->pid(), spare);
    RunUntil([] { return false; }, absl::Milliseconds(100));  // a short session
    pool.Return(std::move(*taken), /*reusable=*/true);
  }
  // Long enough for a start, had one begun, to be ready and found surplus.
  RunUntil([] { return false; }, absl::Seconds(3));
  EXPECT_EQ(Metric(starts) - started_before, 0);
  EXPECT_EQ(Metric(surplus) - surplus_before, 0);
  EXPECT_THAT(pool.spare_pids(), ::testing::ElementsAre(spare));
  Shutdown(pool);
}

// A session that keeps its worker has its spare replaced soon all the same, and a burst is not
// held back by that delay: a session that finds no spare has a worker started for it at once.
TEST_F(SessionWorkerPoolTest, ALongSessionsSpareIsReplacedAndABurstStartsAtOnce) {
  SessionWorkerPool pool(Options(/*max_sessions=*/4, /*spares=*/1), io_);
  pool.Start();
  WaitForSpares(pool, 1);
  absl::StatusOr<SessionWorker> first = Take(pool);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(pool.spare_pids().empty());
  // The next session at once: it waits for a start of its own, not for the delay.
  std::optional<absl::StatusOr<SessionWorker>> second;
  asio::co_spawn(
      io_, [&pool, &second]() -> asio::awaitable<void> { second = co_await pool.Take(); },
      asio::detached);
  io_.poll();
  EXPECT_GE(pool.starts_in_flight(), 1);
  ASSERT_TRUE(RunUntil([&] { return second.has_value(); }, absl::Seconds(30)));
  ASSERT_TRUE(second->ok()) << second->status();
  // And the spare comes back while both sessions go on.
  ASSERT_TRUE(RunUntil([&] { return pool.spare_pids().size() == 1; }, absl::Seconds(30)));
  pool.Return(std::move(*first), /*reusable=*/true);
  pool.Return(std::move(**second), /*reusable=*/true);
  Shutdown(pool);
}

}  // namespace
}  // namespace cnp::session
