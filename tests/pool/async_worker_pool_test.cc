// The pool's policies with fake workers (no processes): admission and its queue limit,
// deadlines and cancellation (queued and running), crashes (replaced at once, at a bounded
// rate), failed starts and idle deaths with their restart backoff, failing fast when no worker
// can start, recycling, rolling reloads, RunAll, leases, workers kept between a caller's calls
// (RunAndKeep) with their quick exchanges, and shutdown.
//
// Everything runs on one io_context driven by the test thread; waits are bounded by the
// event loop (RunUntil), never by sleeps. Timings use small real durations (milliseconds).
#include "service/pool/async_worker_pool.h"

#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/post.hpp"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/metrics/registry.h"
#include "tests/pool/fake_worker.h"
#include "tests/support/stderr_lines.h"

namespace cnp::pool::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class AsyncWorkerPoolTest : public ::testing::Test {
 protected:
  static PoolOptions Options(int workers) {
    PoolOptions options;
    options.workers = workers;
    options.min_backoff = absl::Milliseconds(10);
    options.max_backoff = absl::Milliseconds(40);
    options.reload_quiet = absl::Milliseconds(20);
    options.startup_timeout = absl::Seconds(1);
    return options;
  }

  absl::Status StartPool(PoolOptions options) {
    pool_ = std::make_unique<AsyncWorkerPool>(options, std::make_unique<FakeWorkerFactory>(world_),
                                              io_);
    return pool_->Start();
  }

  void TearDown() override {
    if (pool_ != nullptr) {
      pool_->Shutdown();
      // Let the killed workers be reaped before the pool goes.
      RunUntil([this] { return world_.Alive() == 0; });
    }
  }

  // Runs the context until `done` holds; fails the test after 10 s without it.
  bool RunUntil(const std::function<bool()>& done) {
    const absl::Time limit = absl::Now() + absl::Seconds(10);
    while (!done()) {
      // A context that ran out of work stops; new work (a call) needs it restarted.
      if (io_.stopped()) io_.restart();
      io_.run_one_for(std::chrono::milliseconds(50));
      if (absl::Now() > limit) {
        ADD_FAILURE() << "the condition did not hold within 10 s";
        return false;
      }
    }
    return true;
  }

  template <class T>
  std::shared_ptr<std::optional<T>> Spawn(asio::awaitable<T> call,
                                          asio::cancellation_slot slot = {}) {
    auto result = std::make_shared<std::optional<T>>();
    asio::co_spawn(io_, std::move(call),
                   asio::bind_cancellation_slot(slot, [result](std::exception_ptr e, T value) {
                     if (e) std::rethrow_exception(e);
                     *result = std::move(value);
                   }));
    return result;
  }

  template <class T>
  T Await(asio::awaitable<T> call) {
    auto result = Spawn(std::move(call));
    if (!RunUntil([&] { return result->has_value(); })) throw std::runtime_error("timed out");
    return std::move(**result);
  }

  absl::StatusOr<Reply> Run(const std::string& name,
                            absl::Time deadline = absl::InfiniteFuture()) {
    return Await(pool_->Run(TaskNamed(name), deadline));
  }

  // `count` calls that each crash the worker running them, one after another, each within
  // `each`: every one is answered UNAVAILABLE.
  void RunCrashingCalls(int count, absl::Duration each) {
    for (int i = 0; i < count; ++i) {
      absl::StatusOr<Reply> crashed = Run("crash", absl::Now() + each);
      EXPECT_TRUE(absl::IsUnavailable(crashed.status()))
          << "crash " << i << ": " << crashed.status();
    }
  }

  std::set<pid_t> LivePids() const {
    std::set<pid_t> pids;
    for (const FakeWorker* w : world_.live) {
      if (!w->ended()) pids.insert(w->pid());
    }
    return pids;
  }

  // The world outlives the context: coroutines the context still holds own fake workers.
  FakeWorld world_;
  asio::io_context io_;
  std::unique_ptr<AsyncWorkerPool> pool_;
};

FakeStep StepFor(const Task& task) {
  FakeStep step;
  const std::string& name = NameOf(task);
  if (name == "crash") step.kind = FakeStep::kCrash;
  if (name == "hang") step.kind = FakeStep::kHang;
  if (name == "garbage") step.kind = FakeStep::kGarbage;
  if (name == "too-large") step.kind = FakeStep::kTooLarge;
  if (name == "slow") step.delay = absl::Milliseconds(30);
  // Long enough that a caller spawned meanwhile has certainly queued, however loaded the machine.
  if (name == "long") step.delay = absl::Seconds(2);
  if (name == "holds-300ms") step.delay = absl::Milliseconds(300);
  if (name == "answers-then-dies") {
    step.delay = absl::Milliseconds(300);
    step.dies_after_reply = true;
  }
  if (name == "logs-5x100ms") {
    step.logs_after.assign(5, absl::Milliseconds(100));
    step.delay = absl::Milliseconds(100);
  }
  if (name == "recycle") step.reply.set_recycle(true);  // as after a MemoryError
  if (name == "leaves-threads") {
    step.reply.set_recycle(true);
    step.reply.set_threads_left_running(true);
  }
  if (name == "stale") {
    step.reply.mutable_failure()->set_code(worker::v1::Failure::VERSION_MISMATCH);
  } else {
    step.reply.mutable_validate();
  }
  return step;
}

TEST_F(AsyncWorkerPoolTest, RunsATaskAndReusesTheWorker) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const std::set<pid_t> before = LivePids();
  absl::StatusOr<Reply> reply = Run("a");
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_TRUE(reply->has_validate());
  ASSERT_TRUE(Run("b").ok());
  EXPECT_EQ(LivePids(), before);
  EXPECT_THAT(world_.tasks_seen, ::testing::ElementsAre("a", "b"));
}

TEST_F(AsyncWorkerPoolTest, ACrashMidTaskIsUnavailableSaysHowAndTheWorkerIsReplaced) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  absl::StatusOr<Reply> reply = Run("crash");
  EXPECT_TRUE(absl::IsUnavailable(reply.status())) << reply.status();
  EXPECT_THAT(reply.status().message(), HasSubstr("killed by signal 11"));
  EXPECT_THAT(reply.status().message(), HasSubstr("Validate of crash"));
  // The next call waits for the replacement and is served by it.
  absl::StatusOr<Reply> next = Run("a");
  EXPECT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(world_.start_attempts, 2);
}

TEST_F(AsyncWorkerPoolTest, AWorkerThatDiesWhileIdleIsReplacedBeforeACallerGetsIt) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  world_.live.front()->DieNow("killed by signal 9 (Killed)");
  RunUntil([&] { return world_.start_attempts == 2 && world_.Alive() == 1; });
  absl::StatusOr<Reply> reply = Run("a");
  EXPECT_TRUE(reply.ok()) << reply.status();
  EXPECT_THAT(world_.tasks_seen, ::testing::ElementsAre("a"));
}

// A worker dead an instant before a call takes it (its socket closed, its end not yet
// reported) is not given the call: the call waits for its replacement. Before, the task met the
// closed socket and the call was answered UNAVAILABLE, as if its task had crashed the worker.
TEST_F(AsyncWorkerPoolTest, AWorkerFoundDeadAsACallTakesItIsReplacedNotBlamed) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  world_.live.front()->DieUnnoticed();
  absl::StatusOr<Reply> reply = Run("a");
  EXPECT_TRUE(reply.ok()) << reply.status();
  EXPECT_THAT(world_.tasks_seen, ::testing::ElementsAre("a"));
  EXPECT_EQ(world_.start_attempts, 2);
}

// Found by a review: the same when the worker is handed straight from the call it answered to
// a caller waiting for one. It died just after its answer (the OOM killer, a thread of the
// function calling os._exit), and the waiting caller's task met the closed socket and was
// answered UNAVAILABLE as the crash's cause. The waiting caller gets the replacement.
TEST_F(AsyncWorkerPoolTest, AWorkerFoundDeadAsItIsHandedToAWaitingCallerIsReplacedNotBlamed) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  auto first = Spawn(pool_->Run(TaskNamed("answers-then-dies"), absl::InfiniteFuture()));
  RunUntil([&] { return !world_.running.empty(); });
  auto waiting = Spawn(pool_->Run(TaskNamed("b"), absl::InfiniteFuture()));
  RunUntil([&] { return first->has_value() && waiting->has_value(); });
  EXPECT_TRUE(first->value().ok()) << first->value().status();
  EXPECT_TRUE(waiting->value().ok()) << waiting->value().status();
  EXPECT_THAT(world_.tasks_seen, ::testing::ElementsAre("answers-then-dies", "b"));
  EXPECT_EQ(world_.start_attempts, 2);
}

TEST_F(AsyncWorkerPoolTest, AMalformedReplyReplacesTheWorker) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const std::set<pid_t> before = LivePids();
  absl::StatusOr<Reply> reply = Run("garbage");
  EXPECT_TRUE(absl::IsUnavailable(reply.status())) << reply.status();
  // It did not end by itself: it was killed, and said so.
  EXPECT_THAT(reply.status().message(), HasSubstr("after it stopped answering"));
  EXPECT_TRUE(world_.killed.count(*before.begin()));
  EXPECT_TRUE(Run("a").ok());
}

TEST_F(AsyncWorkerPoolTest, ATaskNeverSentIsTheCallersErrorAndKeepsTheWorker) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const std::set<pid_t> before = LivePids();
  for (absl::Time deadline : {absl::InfiniteFuture(), absl::Now() + absl::Hours(1)}) {
    absl::StatusOr<Reply> reply = Run("too-large", deadline);
    EXPECT_TRUE(absl::IsResourceExhausted(reply.status())) << reply.status();
    EXPECT_THAT(reply.status().message(), HasSubstr("over the limit"));
  }
  // Not a crash: the same worker, never killed, serves the next call; no restart was counted.
  EXPECT_TRUE(world_.killed.empty());
  EXPECT_EQ(LivePids(), before);
  EXPECT_TRUE(Run("a").ok());
  EXPECT_EQ(world_.start_attempts, 1);
}

// The delays the pool asks for, in the order it logged them ("...; retrying in 20ms").
std::vector<absl::Duration> RetryDelays(const std::vector<std::string>& lines) {
  std::vector<absl::Duration> delays;
  for (const std::string& line : lines) {
    const size_t at = line.find("retrying in ");
    if (at == std::string::npos) continue;
    const std::string rest = line.substr(at + 12);
    absl::Duration delay;
    EXPECT_TRUE(absl::ParseDuration(rest.substr(0, rest.find_first_of(" \n")), &delay)) << line;
    delays.push_back(delay);
  }
  return delays;
}

TEST_F(AsyncWorkerPoolTest, RestartsAfterFailedStartsBackOffDoublingUpToTheCap) {
  // Slot 0 starts once, its worker is crashed by a task (restarted at once: no backoff), then
  // every restart fails: the delays between attempts double from min_backoff (10 ms) and stop at
  // max_backoff (40 ms).
  world_.starts = [](int, int attempt) {
    return attempt == 0 ? FakeStart{} : FakeStart{FakeStart::kRefuse, "no python"};
  };
  world_.script = StepFor;
  PoolOptions options = Options(1);
  options.failures_before_fail_fast = 100;
  // The pool runs on this thread: its log lines are all written by the time this returns.
  const std::vector<std::string> log = ::cnp::testing::StderrLinesOf([&] {
    ASSERT_TRUE(StartPool(options).ok());
    EXPECT_FALSE(Run("crash").ok());  // not counted: restart at once, which fails (1), ...
    // Attempt 6 began once the delay asked for after attempt 5 had passed.
    RunUntil([&] { return world_.start_attempts >= 7; });
  });
  // Asked for exactly: after the failed starts 1 to 5, 10 ms, 20 ms, then the cap. Without the
  // cap the last would be 160 ms.
  const std::vector<absl::Duration> expected = {
      absl::Milliseconds(10), absl::Milliseconds(20), absl::Milliseconds(40),
      absl::Milliseconds(40), absl::Milliseconds(40)};
  const std::vector<absl::Duration> asked = RetryDelays(log);
  ASSERT_GE(asked.size(), expected.size()) << ::testing::PrintToString(log);
  EXPECT_EQ(std::vector<absl::Duration>(asked.begin(), asked.begin() + expected.size()),
            expected);
  // And waited for: no attempt came before its delay was over. (No upper bound: how late the
  // next attempt comes depends on the machine's load, not on the pool.)
  for (size_t k = 0; k < expected.size(); ++k) {
    const absl::Duration gap = world_.start_times[k + 2] - world_.start_times[k + 1];
    EXPECT_GE(gap, expected[k]) << "between attempts " << k + 1 << " and " << k + 2;
  }
}

TEST_F(AsyncWorkerPoolTest, StartFailsWithTheReasonWhenNoWorkerCanStart) {
  world_.starts = [](int, int) { return FakeStart{FakeStart::kRefuse, "cannot import site"}; };
  absl::Status status = StartPool(Options(2));
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr("no worker could start: cannot import site"));
}

// A worker refusing the settings it was started with (--allow-module=os) is a bad setting of the
// server's: the start fails with INVALID_ARGUMENT, which cnp-server exits 2 for.
TEST_F(AsyncWorkerPoolTest, StartFailsAsABadSettingWhenTheWorkersRefuseTheirs) {
  world_.starts = [](int, int) {
    return FakeStart{FakeStart::kRefuseSetting, "--allow-module=os: never runs"};
  };
  absl::Status status = StartPool(Options(2));
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_EQ(status.message(), "no worker could start: --allow-module=os: never runs");
}

TEST_F(AsyncWorkerPoolTest, CallersFailFastOnceNoWorkerCanStart) {
  world_.starts = [](int, int) { return FakeStart{FakeStart::kRefuse, "cannot import site"}; };
  ASSERT_FALSE(StartPool(Options(1)).ok());
  // A caller with an hour to wait is failed when the third start fails, not in an hour.
  const absl::Time begin = absl::Now();
  absl::StatusOr<Reply> reply = Run("a", absl::Now() + absl::Hours(1));
  EXPECT_TRUE(absl::IsUnavailable(reply.status())) << reply.status();
  EXPECT_THAT(reply.status().message(), HasSubstr("no worker is running"));
  EXPECT_THAT(reply.status().message(), HasSubstr("cannot import site"));
  EXPECT_LT(absl::Now() - begin, absl::Seconds(5));
  EXPECT_EQ(world_.start_attempts, 3);
  // Later callers fail at once; the pool keeps trying.
  EXPECT_TRUE(absl::IsUnavailable(Run("b", absl::Now() + absl::Hours(1)).status()));
  EXPECT_TRUE(world_.tasks_seen.empty());
}

TEST_F(AsyncWorkerPoolTest, CrashesOnCallsAreNotFailedStartsAndCallersWaitForTheReplacement) {
  world_.script = StepFor;
  PoolOptions options = Options(1);
  options.min_backoff = absl::Milliseconds(20);
  ASSERT_TRUE(StartPool(options).ok());
  // More crashes in a row than failures_before_fail_fast; every start succeeds.
  for (int i = 0; i < options.failures_before_fail_fast + 1; ++i) {
    absl::StatusOr<Reply> crashed = Run("crash");
    EXPECT_TRUE(absl::IsUnavailable(crashed.status())) << crashed.status();
  }
  // The slot is in its restart backoff now: a caller waits for the replacement rather than
  // being told that a start failed.
  absl::StatusOr<Reply> reply = Run("a", absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(world_.start_attempts, options.failures_before_fail_fast + 2);
}

// One client's calls that crash their worker (a function that segfaults or calls os._exit) must
// not make every other caller wait out a backoff they ran up: the task was at fault, not the
// worker's start, and the next worker starts cleanly.
TEST_F(AsyncWorkerPoolTest, WorkersCrashedByTheirTasksAreReplacedWithoutBackoff) {
  world_.script = StepFor;
  PoolOptions options = Options(1);
  // A backoff would show: after the first crash alone the next worker would come a second later.
  options.min_backoff = absl::Seconds(1);
  options.max_backoff = absl::Seconds(30);
  ASSERT_TRUE(StartPool(options).ok());
  RunCrashingCalls(5, absl::Milliseconds(900));
  // Another caller is served by the next worker at once, not after 1 + 2 + 4 + 8 + 16 s.
  absl::StatusOr<Reply> innocent = Run("a", absl::Now() + absl::Milliseconds(900));
  EXPECT_TRUE(innocent.ok()) << innocent.status();
  EXPECT_EQ(world_.start_attempts, 6);
}

// ... but a slot starts workers at most once per min_crash_restart_interval: a client sending
// nothing but crashing calls does not have the pool fork without pause.
TEST_F(AsyncWorkerPoolTest, RestartsAfterTaskCrashesAreSpacedByTheCrashRestartInterval) {
  world_.script = StepFor;
  PoolOptions options = Options(1);
  options.min_backoff = absl::Seconds(10);
  options.max_backoff = absl::Seconds(10);
  options.min_crash_restart_interval = absl::Milliseconds(50);
  ASSERT_TRUE(StartPool(options).ok());
  RunCrashingCalls(4, absl::Seconds(5));
  ASSERT_TRUE(Run("a", absl::Now() + absl::Seconds(5)).ok());
  ASSERT_EQ(world_.start_times.size(), 5u);
  for (size_t k = 1; k < world_.start_times.size(); ++k) {
    // (Less a millisecond: the pool takes its time of a start a moment before the fake does.)
    EXPECT_GE(world_.start_times[k] - world_.start_times[k - 1], absl::Milliseconds(49))
        << "between starts " << k - 1 << " and " << k;
  }
}

// A worker that dies while idle is no task's fault: it may be its start's (a broken extension,
// the environment), and is restarted after the backoff.
TEST_F(AsyncWorkerPoolTest, AWorkerThatDiesIdleIsRestartedAfterTheBackoff) {
  world_.script = StepFor;
  PoolOptions options = Options(1);
  options.min_backoff = absl::Milliseconds(200);
  options.max_backoff = absl::Seconds(1);
  ASSERT_TRUE(StartPool(options).ok());
  const absl::Time died = absl::Now();
  world_.live.front()->DieNow("killed by signal 9 (Killed)");
  RunUntil([&] { return world_.start_attempts == 2; });
  EXPECT_GE(world_.start_times[1] - died, absl::Milliseconds(200));
}

// A worker lent out and given back unused says nothing of its health: one that keeps dying idle
// is restarted after a delay that grows still. Before, the unused lease reset the backoff, so
// a crash loop beside a session that leased and returned its worker restarted at the minimum.
TEST_F(AsyncWorkerPoolTest, ALeaseGivenBackUnusedDoesNotResetTheRestartBackoff) {
  world_.script = StepFor;
  PoolOptions options = Options(1);
  options.min_backoff = absl::Milliseconds(150);
  options.max_backoff = absl::Seconds(5);
  ASSERT_TRUE(StartPool(options).ok());
  world_.live.front()->DieNow("killed by signal 9 (Killed)");
  ASSERT_TRUE(RunUntil([&] { return world_.start_attempts == 2 && world_.Alive() == 1; }));
  {
    absl::StatusOr<std::unique_ptr<AsyncWorkerLease>> lease =
        Await(pool_->Lease(absl::InfiniteFuture()));
    ASSERT_TRUE(lease.ok()) << lease.status();
  }
  io_.restart();
  io_.poll();  // the lease's worker is back
  FakeWorker* second = nullptr;
  for (FakeWorker* w : world_.live) {
    if (!w->ended()) second = w;
  }
  ASSERT_NE(second, nullptr);
  const absl::Time died = absl::Now();
  second->DieNow("killed by signal 9 (Killed)");
  ASSERT_TRUE(RunUntil([&] { return world_.start_attempts == 3; }));
  // The second death in a row: twice the first delay.
  EXPECT_GE(world_.start_times[2] - died, absl::Milliseconds(300));
}

// A worker killed between its handshake and the pool's next step (the OOM killer, say) was
// made idle dead, with nothing left to watch it: the next call was sent to it and failed as
// the call's own crash. It is a start that failed.
TEST_F(AsyncWorkerPoolTest, AWorkerDeadAsItStartsIsAFailedStartNeverGivenToACaller) {
  world_.script = StepFor;
  world_.starts = [](int, int attempt) {
    FakeStart start;
    if (attempt == 1 || attempt == 2) start.kind = FakeStart::kDiesAtOnce;
    return start;
  };
  ASSERT_TRUE(StartPool(Options(1)).ok());
  absl::StatusOr<Reply> next = absl::UnknownError("not run");
  const std::vector<std::string> log = ::cnp::testing::StderrLinesOf([&] {
    ASSERT_TRUE(Run("recycle").ok());  // its replacement is dead twice, then comes up
    next = Run("a");
  });
  EXPECT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(world_.start_attempts, 4);
  EXPECT_EQ(world_.tasks_seen, (std::vector<std::string>{"recycle", "a"}));
  // Backed off as failed starts are: 10 ms, then 20 ms.
  ASSERT_EQ(world_.start_times.size(), 4);
  EXPECT_GE(world_.start_times[3] - world_.start_times[2], absl::Milliseconds(20));
  EXPECT_THAT(::testing::PrintToString(log),
              HasSubstr("failed to start: it was killed by signal 9 (SIGKILL) as it started"));
}

TEST_F(AsyncWorkerPoolTest, AWorkerThatNeverFinishesStartingTimesOutAndIsRetried) {
  world_.starts = [](int, int attempt) {
    return attempt == 0 ? FakeStart{FakeStart::kHang, ""} : FakeStart{};
  };
  PoolOptions options = Options(1);
  options.startup_timeout = absl::Milliseconds(20);
  // The first start timed out; Start() reports the failure, and the retry comes up.
  EXPECT_THAT(StartPool(options).message(), HasSubstr("did not answer within 20ms"));
  EXPECT_TRUE(Run("a", absl::Now() + absl::Seconds(5)).ok());
  EXPECT_EQ(world_.start_attempts, 2);
}

TEST_F(AsyncWorkerPoolTest, ADeadlineMidTaskKillsAndReplacesTheWorker) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const pid_t first = *LivePids().begin();
  absl::StatusOr<Reply> reply = Run("hang", absl::Now() + absl::Milliseconds(30));
  EXPECT_TRUE(absl::IsDeadlineExceeded(reply.status())) << reply.status();
  EXPECT_THAT(reply.status().message(), HasSubstr("did not finish before the deadline"));
  EXPECT_TRUE(world_.killed.count(first));
  RunUntil([&] { return world_.reaped.count(first) > 0; });
  EXPECT_TRUE(Run("a").ok());
  EXPECT_NE(*LivePids().begin(), first);
}

// The deadline counts from the call's arrival: a task that waited for a worker has run only
// part of it when it is killed, and both the caller's message and the log say how long it ran
// (not blaming the function for the wait).
TEST_F(AsyncWorkerPoolTest, ADeadlineMidTaskSaysHowLongTheTaskRanAndThatTheWaitCounted) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  std::optional<absl::StatusOr<Reply>> reply;
  const std::vector<std::string> log = ::cnp::testing::StderrLinesOf([&] {
    auto busy = Spawn(pool_->Run(TaskNamed("holds-300ms"), absl::InfiniteFuture()));
    RunUntil([&] { return !world_.running.empty(); });
    // Waits ~300 ms for the worker, then runs ~200 ms of its 500.
    reply = Run("hang", absl::Now() + absl::Milliseconds(500));
    RunUntil([&] { return busy->has_value(); });
  });
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(absl::IsDeadlineExceeded(reply->status())) << reply->status();
  const std::string message(reply->status().message());
  EXPECT_THAT(message, HasSubstr("did not finish before the deadline (it ran 0."));
  EXPECT_THAT(message, HasSubstr("counts from the call's arrival, its wait for a worker "
                                 "included); its worker was killed and is being replaced"));
  // It ran less than the whole deadline: the wait is not counted as its run time.
  double ran = 0;
  const size_t at = message.find("it ran ");
  ASSERT_NE(at, std::string::npos);
  ASSERT_TRUE(absl::SimpleAtod(message.substr(at + 7, 4), &ran)) << message;
  EXPECT_LT(ran, 0.45) << message;
  bool logged = false;
  for (const std::string& line : log) {
    if (line.find("did not finish Validate of hang before the deadline (it ran ") !=
            std::string::npos &&
        line.find("its wait for a worker included): killing and replacing it") !=
            std::string::npos) {
      logged = true;
    }
  }
  EXPECT_TRUE(logged) << ::testing::PrintToString(log);
}

// The series cnp_worker_exits_total{cause=CAUSE,pool="batch"} as the registry renders it, or 0.
double WorkerExits(const std::string& cause) {
  const std::string text = metrics::Registry::Default().Render();
  const std::string series =
      absl::StrCat("cnp_worker_exits_total{cause=\"", cause, "\",pool=\"batch\"} ");
  const size_t at = text.find(series);
  double value = 0;
  if (at == std::string::npos) return value;
  const size_t begin = at + series.size();
  EXPECT_TRUE(absl::SimpleAtod(text.substr(begin, text.find('\n', begin) - begin), &value));
  return value;
}

// A client cancels its call at its deadline, which may reach the server before the server's
// copy of that deadline passes: such a cancel is the deadline's, for the caller's status, the
// log line and the worker's exit cause alike (a review saw a Map past a 1.5 s client timeout
// counted DEADLINE_EXCEEDED, logged CANCELLED, and its worker's exit counted as "cancel").
TEST_F(AsyncWorkerPoolTest, ACancelAtTheDeadlineIsTheDeadlines) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const pid_t first = *LivePids().begin();
  const double deadlines_before = WorkerExits("deadline");
  const double cancels_before = WorkerExits("cancel");
  // Cancelled 50 ms before its deadline (within kDeadlineCancelSlack), while it runs.
  const absl::Time deadline = absl::Now() + absl::Milliseconds(400);
  asio::cancellation_signal cancel;
  asio::steady_timer at(io_, absl::ToChronoNanoseconds(deadline - absl::Milliseconds(50) -
                                                        absl::Now()));
  at.async_wait([&cancel](const asio::error_code&) {
    cancel.emit(asio::cancellation_type::terminal);
  });
  std::shared_ptr<std::optional<absl::StatusOr<Reply>>> result;
  const std::vector<std::string> log = ::cnp::testing::StderrLinesOf([&] {
    result = Spawn(pool_->Run(TaskNamed("hang"), deadline), cancel.slot());
    RunUntil([&] { return result->has_value(); });
  });
  ASSERT_TRUE(result->has_value());
  EXPECT_TRUE(absl::IsDeadlineExceeded((*result)->status())) << (*result)->status();
  EXPECT_THAT((*result)->status().message(), HasSubstr("did not finish before the deadline"));
  EXPECT_TRUE(world_.killed.count(first));
  EXPECT_EQ(WorkerExits("deadline"), deadlines_before + 1);
  EXPECT_EQ(WorkerExits("cancel"), cancels_before);
  bool logged = false;
  for (const std::string& line : log) {
    EXPECT_EQ(line.find("was cancelled"), std::string::npos) << line;
    if (line.find("did not finish Validate of hang before the deadline") != std::string::npos) {
      logged = true;
    }
  }
  EXPECT_TRUE(logged) << ::testing::PrintToString(log);

  // Queued: the same.
  auto busy = Spawn(pool_->Run(TaskNamed("holds-300ms"), absl::InfiniteFuture()));
  RunUntil([&] { return !world_.running.empty(); });
  asio::cancellation_signal cancel_queued;
  const absl::Time queued_deadline = absl::Now() + absl::Milliseconds(200);
  asio::steady_timer at_queued(io_, absl::ToChronoNanoseconds(queued_deadline -
                                                               absl::Milliseconds(50) -
                                                               absl::Now()));
  at_queued.async_wait([&cancel_queued](const asio::error_code&) {
    cancel_queued.emit(asio::cancellation_type::terminal);
  });
  auto queued = Spawn(pool_->Run(TaskNamed("queued"), queued_deadline), cancel_queued.slot());
  RunUntil([&] { return queued->has_value(); });
  EXPECT_TRUE(absl::IsDeadlineExceeded((*queued)->status())) << (*queued)->status();
  EXPECT_THAT((*queued)->status().message(), HasSubstr("waiting for one of the 1 busy workers"));
  RunUntil([&] { return busy->has_value(); });

  // Long before its deadline, a cancel is the caller's.
  asio::cancellation_signal early;
  auto cancelled = Spawn(pool_->Run(TaskNamed("hang"), absl::Now() + absl::Hours(1)),
                         early.slot());
  RunUntil([&] { return !world_.running.empty(); });
  early.emit(asio::cancellation_type::terminal);
  RunUntil([&] { return cancelled->has_value(); });
  EXPECT_TRUE(absl::IsCancelled((*cancelled)->status())) << (*cancelled)->status();
  EXPECT_EQ(WorkerExits("cancel"), cancels_before + 1);
}

TEST_F(AsyncWorkerPoolTest, CancellingARunningTaskKillsItsWorkerAtOnce) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const pid_t first = *LivePids().begin();
  asio::cancellation_signal cancel;
  auto result = Spawn(pool_->Run(TaskNamed("hang"), absl::InfiniteFuture()), cancel.slot());
  RunUntil([&] { return world_.running.count(first) > 0; });
  cancel.emit(asio::cancellation_type::terminal);
  RunUntil([&] { return result->has_value(); });
  EXPECT_TRUE(absl::IsCancelled((*result)->status())) << (*result)->status();
  EXPECT_TRUE(world_.killed.count(first));
  RunUntil([&] { return world_.reaped.count(first) > 0; });
  EXPECT_TRUE(Run("a").ok());
}

TEST_F(AsyncWorkerPoolTest, ACancelledQueuedTaskNeverRuns) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  auto busy = Spawn(pool_->Run(TaskNamed("slow"), absl::InfiniteFuture()));
  RunUntil([&] { return !world_.running.empty(); });
  asio::cancellation_signal cancel;
  auto queued = Spawn(pool_->Run(TaskNamed("queued"), absl::InfiniteFuture()), cancel.slot());
  io_.poll();  // let it join the queue
  cancel.emit(asio::cancellation_type::terminal);
  RunUntil([&] { return queued->has_value() && busy->has_value(); });
  EXPECT_TRUE(absl::IsCancelled((*queued)->status())) << (*queued)->status();
  EXPECT_TRUE((*busy)->ok());
  EXPECT_TRUE(Run("after").ok());
  EXPECT_THAT(world_.tasks_seen, ::testing::ElementsAre("slow", "after"));
  EXPECT_TRUE(world_.killed.empty());  // nobody was killed for it
}

TEST_F(AsyncWorkerPoolTest, AQueuedCallerWhoseDeadlinePassesGetsDeadlineExceeded) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  auto busy = Spawn(pool_->Run(TaskNamed("hang"), absl::InfiniteFuture()));
  RunUntil([&] { return !world_.running.empty(); });
  absl::StatusOr<Reply> queued = Run("queued", absl::Now() + absl::Milliseconds(20));
  EXPECT_TRUE(absl::IsDeadlineExceeded(queued.status())) << queued.status();
  EXPECT_THAT(queued.status().message(), HasSubstr("waiting for one of the 1 busy workers"));
  EXPECT_THAT(world_.tasks_seen, ::testing::ElementsAre("hang"));
}

TEST_F(AsyncWorkerPoolTest, AFullQueueIsResourceExhausted) {
  world_.script = StepFor;
  PoolOptions options = Options(1);
  options.max_queue = 2;
  ASSERT_TRUE(StartPool(options).ok());
  auto busy = Spawn(pool_->Run(TaskNamed("slow"), absl::InfiniteFuture()));
  RunUntil([&] { return !world_.running.empty(); });
  auto second = Spawn(pool_->Run(TaskNamed("second"), absl::InfiniteFuture()));
  auto third = Spawn(pool_->Run(TaskNamed("third"), absl::InfiniteFuture()));
  io_.poll();
  absl::StatusOr<Reply> fourth = Run("fourth");
  EXPECT_TRUE(absl::IsResourceExhausted(fourth.status())) << fourth.status();
  EXPECT_THAT(fourth.status().message(), HasSubstr("2 calls are already queued"));
  // The queued ones are served in order.
  RunUntil([&] { return third->has_value(); });
  EXPECT_TRUE((*second)->ok());
  EXPECT_THAT(world_.tasks_seen, ::testing::ElementsAre("slow", "second", "third"));
}

TEST_F(AsyncWorkerPoolTest, AVersionMismatchIsTheCallersDataAndKeepsTheWorker) {
  // The pool does not retry a stale version: the worker re-imports changed code itself
  // (FunctionRegistry), and a mismatch that remains is the caller's answer.
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const std::set<pid_t> before = LivePids();
  absl::StatusOr<Reply> reply = Run("stale");
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->failure().code(), worker::v1::Failure::VERSION_MISMATCH);
  EXPECT_THAT(world_.tasks_seen, ::testing::ElementsAre("stale"));
  EXPECT_EQ(LivePids(), before);
}

TEST_F(AsyncWorkerPoolTest, RecyclesAfterMaxCalls) {
  world_.script = StepFor;
  PoolOptions options = Options(1);
  options.max_calls_per_worker = 2;
  ASSERT_TRUE(StartPool(options).ok());
  const pid_t first = *LivePids().begin();
  ASSERT_TRUE(Run("a").ok());
  EXPECT_EQ(*LivePids().begin(), first);
  ASSERT_TRUE(Run("b").ok());
  EXPECT_TRUE(world_.killed.count(first));
  ASSERT_TRUE(Run("c").ok());
  EXPECT_EQ(world_.start_attempts, 2);
}

TEST_F(AsyncWorkerPoolTest, AReplyAskingForRecyclingReplacesTheWorker) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const pid_t first = *LivePids().begin();
  absl::StatusOr<Reply> reply = Run("recycle");
  ASSERT_TRUE(reply.ok());  // the caller still gets its answer
  EXPECT_TRUE(world_.killed.count(first));
  ASSERT_TRUE(Run("a").ok());
  EXPECT_EQ(world_.start_attempts, 2);
}

// A worker replaced for the Python threads a function left running did not run out of memory:
// the log and the exit counter say which it was.
TEST_F(AsyncWorkerPoolTest, AReplyAskingForReplacementIsLoggedAndCountedByItsCause) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const double memory_before = WorkerExits("memory");
  const double recycle_before = WorkerExits("recycle");
  const std::vector<std::string> threads_log =
      ::cnp::testing::StderrLinesOf([&] { ASSERT_TRUE(Run("leaves-threads").ok()); });
  EXPECT_THAT(::testing::PrintToString(threads_log),
              HasSubstr("because Python threads a function started were still running"));
  EXPECT_THAT(::testing::PrintToString(threads_log), Not(HasSubstr("memory")));
  EXPECT_EQ(WorkerExits("recycle"), recycle_before + 1);
  EXPECT_EQ(WorkerExits("memory"), memory_before);

  const std::vector<std::string> memory_log =
      ::cnp::testing::StderrLinesOf([&] { ASSERT_TRUE(Run("recycle").ok()); });
  EXPECT_THAT(::testing::PrintToString(memory_log), HasSubstr("because it ran out of memory"));
  EXPECT_EQ(WorkerExits("memory"), memory_before + 1);
  EXPECT_EQ(WorkerExits("recycle"), recycle_before + 1);
  EXPECT_EQ(world_.start_attempts, 3);
}

TEST_F(AsyncWorkerPoolTest, AnIdleWorkerOverTheMemoryCapIsReplaced) {
  world_.script = StepFor;
  PoolOptions options = Options(1);
  options.memory_cap_bytes = 100 << 20;
  options.memory_check_interval = absl::Milliseconds(5);
  ASSERT_TRUE(StartPool(options).ok());
  const pid_t first = *LivePids().begin();
  RunUntil([&] { return world_.start_attempts == 1 && !world_.killed.count(first); });
  world_.resident_bytes = 200 << 20;
  RunUntil([&] { return world_.killed.count(first) > 0; });
  world_.resident_bytes = 1 << 20;
  ASSERT_TRUE(Run("a").ok());
  EXPECT_EQ(world_.start_attempts, 2);
}

// The pool's maintenance once stopped a slot for good: a rolling reload took an idle worker
// down to restart it, the memory check in the same round replaced another, and the round
// started over without starting the first (left "starting" forever).
TEST_F(AsyncWorkerPoolTest, AMemoryReplacementDuringARollingReloadStillStartsTheReloadedWorker) {
  world_.script = StepFor;
  PoolOptions options = Options(2);
  options.memory_cap_bytes = 100 << 20;
  options.memory_check_interval = absl::ZeroDuration();  // every round of the maintenance
  ASSERT_TRUE(StartPool(options).ok());
  RunUntil([&] { return world_.Alive() == 2; });
  // In one handler, so that the next round of the maintenance sees both: the reload's first
  // idle worker goes down for its restart, the other is over the cap. (Their replacements are
  // not.)
  asio::post(io_, [&] {
    for (pid_t pid : LivePids()) world_.resident_bytes_of[pid] = 200 << 20;
    pool_->ReloadAll();
  });
  RunUntil([&] { return world_.killed.size() == 2; });
  RunUntil([&] { return world_.Alive() == 2; });
  EXPECT_TRUE(Run("a").ok());
}

TEST_F(AsyncWorkerPoolTest, AReloadReplacesOneWorkerAtATimeAndMergesAStorm) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(3)).ok());
  const std::set<pid_t> before = LivePids();
  pool_->ReloadAll();
  // A storm while the first reload runs: merged into one more reload after it.
  for (int i = 0; i < 20; ++i) {
    io_.run_one();
    pool_->ReloadAll();
  }
  RunUntil([&] { return world_.start_attempts >= 9; });
  // Let any further (wrong) reload show itself: ten quiet periods with nothing due.
  io_.run_for(std::chrono::milliseconds(200));
  EXPECT_EQ(world_.start_attempts, 9);  // 3 at start, 3 per reload, 2 reloads
  // Never more than one worker missing while reloading.
  for (size_t k = 3; k < world_.alive_at_start.size(); ++k) {
    EXPECT_GE(world_.alive_at_start[k], 2) << "start " << k;
  }
  for (pid_t pid : before) EXPECT_TRUE(world_.killed.count(pid));
  EXPECT_TRUE(Run("a").ok());
}

// A reload whose new workers cannot start (a broken Python, a setting the new code refuses)
// stops at the first: the stale workers serve on. It went on to the next stale idle worker
// while the failed one waited for its retry, and in a few seconds none was left (a review).
TEST_F(AsyncWorkerPoolTest, AReloadWhoseWorkersCannotStartKeepsTheOldOnesServing) {
  world_.script = StepFor;
  world_.starts = [](int, int attempt) {
    return attempt < 3 ? FakeStart{} : FakeStart{FakeStart::kRefuse, "no python"};
  };
  ASSERT_TRUE(StartPool(Options(3)).ok());
  pool_->ReloadAll();
  // Several failed starts of the first replacement, each after its backoff.
  ASSERT_TRUE(RunUntil([&] { return world_.start_attempts >= 8; }));
  EXPECT_EQ(world_.Alive(), 2);
  EXPECT_EQ(world_.killed.size(), 1u);
  EXPECT_TRUE(Run("a").ok());
}

TEST_F(AsyncWorkerPoolTest, ABusyWorkerIsReplacedAfterItsCallWhenAReloadCame) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const pid_t first = *LivePids().begin();
  auto busy = Spawn(pool_->Run(TaskNamed("slow"), absl::InfiniteFuture()));
  RunUntil([&] { return !world_.running.empty(); });
  pool_->ReloadAll();
  RunUntil([&] { return busy->has_value(); });
  EXPECT_TRUE((*busy)->ok());  // not failed by the reload
  EXPECT_TRUE(world_.killed.count(first));
  EXPECT_TRUE(Run("a").ok());
  EXPECT_EQ(world_.start_attempts, 2);
}

// Two busy workers whose calls end together after a reload are replaced one after the other,
// never both at once (a review saw a SIGHUP leave no worker for ~70 ms): the second serves on
// until the first's replacement is up.
TEST_F(AsyncWorkerPoolTest, AReloadReplacesBusyWorkersOneAtATime) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(2)).ok());
  const std::set<pid_t> before = LivePids();
  auto a = Spawn(pool_->Run(TaskNamed("slow"), absl::InfiniteFuture()));
  auto b = Spawn(pool_->Run(TaskNamed("slow"), absl::InfiniteFuture()));
  ASSERT_TRUE(RunUntil([&] { return world_.running.size() == 2; }));
  pool_->ReloadAll();
  ASSERT_TRUE(RunUntil([&] { return a->has_value() && b->has_value(); }));
  EXPECT_TRUE((*a)->ok());
  EXPECT_TRUE((*b)->ok());
  ASSERT_TRUE(RunUntil([&] {
    return world_.start_attempts == 4 && world_.Alive() == 2 &&
           std::none_of(before.begin(), before.end(),
                        [&](pid_t pid) { return LivePids().count(pid) > 0; });
  }));
  // Each replacement started with the other worker alive.
  ASSERT_EQ(world_.alive_at_start.size(), 4u);
  EXPECT_EQ(world_.alive_at_start[2], 1);
  EXPECT_EQ(world_.alive_at_start[3], 1);
  EXPECT_TRUE(Run("a").ok());
}

TEST_F(AsyncWorkerPoolTest, RunAllAnswersInTaskOrderOnEveryWorker) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(3)).ok());
  std::vector<Task> tasks;
  for (int i = 0; i < 12; ++i) tasks.push_back(TaskNamed(i == 5 ? "slow" : absl::StrCat(i)));
  std::vector<absl::StatusOr<Reply>> results =
      Await(pool_->RunAll(tasks, absl::InfiniteFuture()));
  ASSERT_EQ(results.size(), 12u);
  for (const auto& r : results) EXPECT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(world_.tasks_seen.size(), 12u);
  EXPECT_TRUE(world_.killed.empty());
}

// A batch is the parts of one call, which fails if any part does: the first part that fails
// (here its worker crashed) stops the batch, and RunAll answers at once rather than after the
// parts still running (a review: a Map answered UNAVAILABLE 14.4 s after the crash, 28,000
// documents computed for nothing). A part still running is not killed for it: it ends on its
// worker, which then serves others.
TEST_F(AsyncWorkerPoolTest, RunAllStopsAtTheFirstFailedTaskAndAnswersAtOnce) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(2)).ok());
  std::vector<Task> tasks;
  tasks.push_back(TaskNamed("long"));  // 2 s
  tasks.push_back(TaskNamed("crash"));
  for (int i = 2; i < 8; ++i) tasks.push_back(TaskNamed(absl::StrCat(i)));
  auto results = Spawn(pool_->RunAll(tasks, absl::InfiniteFuture()));
  ASSERT_TRUE(RunUntil([&] { return results->has_value(); }));
  // Answered while the long task still runs.
  ASSERT_EQ(world_.running.size(), 1u);
  const pid_t long_pid = *world_.running.begin();
  ASSERT_EQ((*results)->size(), 8u);
  const std::vector<absl::StatusOr<Reply>>& r = **results;
  EXPECT_TRUE(absl::IsUnavailable(r[1].status())) << r[1].status();
  EXPECT_FALSE(WasNotRunInBatch(r[1].status()));
  EXPECT_THAT(r[1].status().message(), HasSubstr("Validate of crash"));
  // The others were not run, or not waited for: the crash's status, marked so.
  for (size_t i : {0, 2, 3, 4, 5, 6, 7}) {
    EXPECT_TRUE(absl::IsUnavailable(r[i].status())) << i << ": " << r[i].status();
    EXPECT_TRUE(WasNotRunInBatch(r[i].status())) << i;
  }
  EXPECT_THAT(world_.tasks_seen, ::testing::ElementsAre("long", "crash"));
  // The long task ends on its worker, which is kept and serves the next callers.
  ASSERT_TRUE(RunUntil([&] { return world_.running.empty(); }));
  EXPECT_FALSE(world_.killed.count(long_pid));
  EXPECT_TRUE(Await(pool_->RunAll({TaskNamed("a"), TaskNamed("b")}, absl::InfiniteFuture()))[1].ok());
  EXPECT_TRUE(LivePids().count(long_pid));
  EXPECT_EQ(world_.start_attempts, 3);  // two, and the crashed one's replacement
}

// One big batch does not hold every other caller up (a review: a Map of 32,000 documents on 2
// workers, and a Validate sent a second later waited out its 20 s deadline): between two tasks
// a batch's worker goes to a caller waiting for one, and the batch queues behind it.
TEST_F(AsyncWorkerPoolTest, ACallerWaitsForOneTaskOfABatchNotForTheBatch) {
  world_.script = [](const Task& task) {
    FakeStep step = StepFor(task);
    if (NameOf(task).starts_with("part")) step.delay = absl::Milliseconds(50);
    return step;
  };
  ASSERT_TRUE(StartPool(Options(2)).ok());
  std::vector<Task> tasks;
  for (int i = 0; i < 16; ++i) tasks.push_back(TaskNamed(absl::StrCat("part", i)));
  auto batch = Spawn(pool_->RunAll(tasks, absl::InfiniteFuture()));
  ASSERT_TRUE(RunUntil([&] { return world_.running.size() == 2; }));
  auto other = Spawn(pool_->Run(TaskNamed("other"), absl::InfiniteFuture()));
  ASSERT_TRUE(RunUntil([&] { return other->has_value() && batch->has_value(); }));
  EXPECT_TRUE((*other)->ok());
  for (const auto& r : **batch) EXPECT_TRUE(r.ok()) << r.status();
  // It ran once one of the two parts running when it came had ended, on that part's worker
  // (the other worker may have taken the next part meanwhile); before, after all 16.
  ASSERT_EQ(world_.tasks_seen.size(), 17u);
  const size_t at = std::find(world_.tasks_seen.begin(), world_.tasks_seen.end(), "other") -
                    world_.tasks_seen.begin();
  EXPECT_LE(at, 3u) << ::testing::PrintToString(world_.tasks_seen);
  const pid_t served_by = world_.task_pids[at];
  for (size_t k = 2; k < at; ++k) EXPECT_NE(world_.task_pids[k], served_by) << k;
  EXPECT_TRUE(world_.killed.empty());
}

// Two batches on one worker take turns, one task each: a batch that waited its turn runs a task
// before it gives the worker to the other.
TEST_F(AsyncWorkerPoolTest, TwoBatchesOnOneWorkerTakeTurns) {
  world_.script = [](const Task& task) {
    FakeStep step = StepFor(task);
    step.delay = absl::Milliseconds(10);
    return step;
  };
  ASSERT_TRUE(StartPool(Options(1)).ok());
  auto a = Spawn(pool_->RunAll({TaskNamed("a0"), TaskNamed("a1"), TaskNamed("a2")},
                               absl::InfiniteFuture()));
  ASSERT_TRUE(RunUntil([&] { return !world_.running.empty(); }));
  auto b = Spawn(pool_->RunAll({TaskNamed("b0"), TaskNamed("b1"), TaskNamed("b2")},
                               absl::InfiniteFuture()));
  ASSERT_TRUE(RunUntil([&] { return a->has_value() && b->has_value(); }));
  for (const auto& r : **a) EXPECT_TRUE(r.ok()) << r.status();
  for (const auto& r : **b) EXPECT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(world_.tasks_seen, ::testing::ElementsAre("a0", "b0", "a1", "b1", "a2", "b2"));
}

// Callers that wait while a batch holds the only worker are served in their order, one between
// each two of the batch's tasks; the batch, queued behind them, is not refused for a full queue.
TEST_F(AsyncWorkerPoolTest, CallersWaitingForABatchsWorkerAreServedInOrder) {
  world_.script = [](const Task& task) {
    FakeStep step = StepFor(task);
    if (NameOf(task).starts_with("part")) step.delay = absl::Milliseconds(20);
    return step;
  };
  PoolOptions options = Options(1);
  options.max_queue = 2;
  ASSERT_TRUE(StartPool(options).ok());
  std::vector<Task> tasks;
  for (int i = 0; i < 4; ++i) tasks.push_back(TaskNamed(absl::StrCat("part", i)));
  auto batch = Spawn(pool_->RunAll(tasks, absl::InfiniteFuture()));
  ASSERT_TRUE(RunUntil([&] { return !world_.running.empty(); }));
  auto first = Spawn(pool_->Run(TaskNamed("first"), absl::InfiniteFuture()));
  auto second = Spawn(pool_->Run(TaskNamed("second"), absl::InfiniteFuture()));
  ASSERT_TRUE(RunUntil([&] {
    return batch->has_value() && first->has_value() && second->has_value();
  }));
  for (const auto& r : **batch) EXPECT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*first)->ok());
  EXPECT_TRUE((*second)->ok());
  EXPECT_THAT(world_.tasks_seen,
              ::testing::ElementsAre("part0", "first", "second", "part1", "part2", "part3"));
}

TEST_F(AsyncWorkerPoolTest, CancellingRunAllFreesEveryWorkerAtOnce) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(2)).ok());
  const std::set<pid_t> before = LivePids();
  std::vector<Task> tasks(10, TaskNamed("hang"));
  asio::cancellation_signal cancel;
  auto results = Spawn(pool_->RunAll(tasks, absl::InfiniteFuture()), cancel.slot());
  RunUntil([&] { return world_.running.size() == 2; });
  cancel.emit(asio::cancellation_type::terminal);
  RunUntil([&] { return results->has_value(); });
  ASSERT_EQ((*results)->size(), 10u);
  for (const auto& r : **results) EXPECT_TRUE(absl::IsCancelled(r.status())) << r.status();
  for (pid_t pid : before) EXPECT_TRUE(world_.killed.count(pid));
  EXPECT_EQ(world_.tasks_seen.size(), 2u);  // the other 8 never ran
  // Both replaced and serving.
  EXPECT_TRUE(Await(pool_->RunAll({TaskNamed("a"), TaskNamed("b")}, absl::InfiniteFuture()))[1].ok());
}

TEST_F(AsyncWorkerPoolTest, ALeaseKeepsOneWorkerAndGivesItBack) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  absl::StatusOr<std::unique_ptr<AsyncWorkerLease>> lease =
      Await(pool_->Lease(absl::InfiniteFuture()));
  ASSERT_TRUE(lease.ok());
  // While it is held, another caller waits.
  auto other = Spawn(pool_->Run(TaskNamed("other"), absl::InfiniteFuture()));
  EXPECT_TRUE(Await((*lease)->Exchange(TaskNamed("one"), absl::InfiniteFuture())).ok());
  EXPECT_TRUE(Await((*lease)->Exchange(TaskNamed("two"), absl::InfiniteFuture())).ok());
  EXPECT_FALSE(other->has_value());
  lease->reset();
  RunUntil([&] { return other->has_value(); });
  EXPECT_TRUE((*other)->ok());
  EXPECT_THAT(world_.tasks_seen, ::testing::ElementsAre("one", "two", "other"));
  EXPECT_EQ(world_.start_attempts, 1);
}

// Moves a task's deadline `restart` past each log line it is handed, as a CouchDB session's
// listener does (CouchDB restarts its timeout on each line it reads).
class DeadlineRestarter final : public TaskLogListener {
 public:
  explicit DeadlineRestarter(absl::Duration restart) : restart_(restart) {}
  absl::Time OnLog(Reply interim) override {
    lines.push_back(interim.task_log().message());
    return absl::Now() + restart_;
  }
  std::vector<std::string> lines;

 private:
  const absl::Duration restart_;
};

// 600 ms of work with a line every 100 ms, under a 400 ms deadline that each line restarts;
// with quick exchanges too (the parameter), which leave the rest to the pool's context.
class LeaseLogLinesTest : public AsyncWorkerPoolTest, public ::testing::WithParamInterface<bool> {};

TEST_P(LeaseLogLinesTest, ReachTheListenerAndRestartTheDeadline) {
  world_.script = StepFor;
  world_.quick = GetParam();
  ASSERT_TRUE(StartPool(Options(1)).ok());
  absl::StatusOr<std::unique_ptr<AsyncWorkerLease>> lease =
      Await(pool_->Lease(absl::InfiniteFuture()));
  ASSERT_TRUE(lease.ok());
  DeadlineRestarter logs(absl::Milliseconds(400));
  absl::StatusOr<Reply> reply = Await((*lease)->ExchangeForwardingLogs(
      TaskNamed("logs-5x100ms"), absl::Now() + absl::Milliseconds(400), logs));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_THAT(logs.lines,
              ::testing::ElementsAre("line 0", "line 1", "line 2", "line 3", "line 4"));
  EXPECT_THAT(world_.logs_early_asked, ::testing::ElementsAre(true));
  EXPECT_TRUE(world_.killed.empty());
}

INSTANTIATE_TEST_SUITE_P(QuickExchangesOrNot, LeaseLogLinesTest, ::testing::Bool());

TEST_F(AsyncWorkerPoolTest, WithoutAListenerTheSameTaskMissesItsDeadline) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  absl::StatusOr<std::unique_ptr<AsyncWorkerLease>> lease =
      Await(pool_->Lease(absl::InfiniteFuture()));
  ASSERT_TRUE(lease.ok());
  absl::StatusOr<Reply> reply = Await(
      (*lease)->Exchange(TaskNamed("logs-5x100ms"), absl::Now() + absl::Milliseconds(400)));
  EXPECT_TRUE(absl::IsDeadlineExceeded(reply.status())) << reply.status();
  EXPECT_THAT(world_.logs_early_asked, ::testing::ElementsAre(false));
  EXPECT_EQ(world_.logs_forwarded, 0);
}

// A line the listener does not restart the deadline for (one CouchDB will not get) leaves it.
TEST_F(AsyncWorkerPoolTest, ALogLineTheListenerDoesNotMoveTheDeadlineForLeavesIt) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  absl::StatusOr<std::unique_ptr<AsyncWorkerLease>> lease =
      Await(pool_->Lease(absl::InfiniteFuture()));
  ASSERT_TRUE(lease.ok());
  DeadlineRestarter logs(absl::Seconds(-10));
  absl::StatusOr<Reply> reply = Await((*lease)->ExchangeForwardingLogs(
      TaskNamed("logs-5x100ms"), absl::Now() + absl::Milliseconds(400), logs));
  EXPECT_TRUE(absl::IsDeadlineExceeded(reply.status())) << reply.status();
  EXPECT_FALSE(logs.lines.empty());
}

TEST_F(AsyncWorkerPoolTest, RunAndKeepHandsOverLogLinesAndRestartsTheDeadline) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  DeadlineRestarter logs(absl::Milliseconds(400));
  AsyncTaskRunner::KeptRun ran = Await(pool_->RunAndKeep(
      TaskNamed("logs-5x100ms"), absl::Now() + absl::Milliseconds(400), [] {}, &logs));
  ASSERT_TRUE(ran.reply.ok()) << ran.reply.status();
  EXPECT_EQ(logs.lines.size(), 5u);
  EXPECT_THAT(world_.logs_early_asked, ::testing::ElementsAre(true));
  EXPECT_TRUE(world_.killed.empty());
}

// A list's step that raised MemoryError asks for its worker to be replaced, as a Run's reply
// does: the worker is not handed to the next caller when the lease lets it go.
TEST_F(AsyncWorkerPoolTest, ALeaseWhoseReplyAskedForRecyclingReplacesTheWorkerWhenGivenBack) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const pid_t first = *LivePids().begin();
  absl::StatusOr<std::unique_ptr<AsyncWorkerLease>> lease =
      Await(pool_->Lease(absl::InfiniteFuture()));
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(Await((*lease)->Exchange(TaskNamed("recycle"), absl::InfiniteFuture())).ok());
  lease->reset();
  ASSERT_TRUE(Run("a").ok());
  EXPECT_TRUE(world_.killed.count(first));
  EXPECT_EQ(world_.start_attempts, 2);
}

// ---- Workers kept between a session's lines (RunAndKeep). ----

// A kept worker and the test's stand-in for the session that keeps it: `wanted` counts the
// pool's requests for it back; a keeper that gives it back when asked lets the lease go then.
struct Keeper {
  std::unique_ptr<AsyncWorkerLease> lease;
  int wanted = 0;
  bool give_when_wanted = false;
  std::function<void()> Wanted() {
    return [this] {
      ++wanted;
      if (give_when_wanted) lease.reset();
    };
  }
};

class KeptWorkerTest : public AsyncWorkerPoolTest {
 protected:
  // Runs `name` keeping its worker in `keeper`, if the pool keeps it; the run's reply.
  absl::StatusOr<Reply> RunAndKeep(const std::string& name, Keeper& keeper) {
    AsyncTaskRunner::KeptRun ran =
        Await(pool_->RunAndKeep(TaskNamed(name), absl::InfiniteFuture(), keeper.Wanted()));
    keeper.lease = std::move(ran.kept);
    return std::move(ran.reply);
  }
  // Runs a first task keeping its worker in `keeper`, which gives it back when asked.
  void KeepAWorker(Keeper& keeper) {
    keeper.give_when_wanted = true;
    ASSERT_TRUE(RunAndKeep("first", keeper).ok());
    ASSERT_NE(keeper.lease, nullptr);
  }
};

TEST_F(KeptWorkerTest, TheWorkerIsKeptTakesQuickExchangesAndIsAskedBackForAWaitingCaller) {
  world_.script = StepFor;
  world_.quick = true;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  Keeper keeper;
  ASSERT_TRUE(RunAndKeep("first", keeper).ok());
  ASSERT_NE(keeper.lease, nullptr);
  EXPECT_TRUE(Await(keeper.lease->Exchange(TaskNamed("one"), absl::InfiniteFuture())).ok());
  EXPECT_TRUE(Await(keeper.lease->Exchange(TaskNamed("two"), absl::InfiniteFuture())).ok());
  EXPECT_EQ(world_.quick_exchanges, 2);
  // Nobody else wants it yet: kept. Then a caller comes, and the pool asks for it, once.
  EXPECT_EQ(keeper.wanted, 0);
  auto other = Spawn(pool_->Run(TaskNamed("other"), absl::InfiniteFuture()));
  ASSERT_TRUE(RunUntil([&] { return keeper.wanted == 1; }));
  EXPECT_FALSE(other->has_value());
  auto another = Spawn(pool_->Run(TaskNamed("another"), absl::InfiniteFuture()));
  io_.poll();
  EXPECT_EQ(keeper.wanted, 1);
  keeper.lease.reset();
  ASSERT_TRUE(RunUntil([&] { return other->has_value() && another->has_value(); }));
  EXPECT_TRUE((*other)->ok());
  EXPECT_TRUE((*another)->ok());
  EXPECT_THAT(world_.tasks_seen,
              ::testing::ElementsAre("first", "one", "two", "other", "another"));
  EXPECT_EQ(world_.start_attempts, 1);
}

// Under contention the worker that answers goes to the caller waiting for it.
TEST_F(KeptWorkerTest, NoWorkerIsKeptWhileAnotherCallerWaits) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  Keeper keeper;
  auto kept = Spawn(pool_->RunAndKeep(TaskNamed("long"), absl::InfiniteFuture(), keeper.Wanted()));
  ASSERT_TRUE(RunUntil([&] { return !world_.running.empty(); }));
  auto waiting = Spawn(pool_->Run(TaskNamed("waiting"), absl::InfiniteFuture()));
  ASSERT_TRUE(RunUntil([&] { return kept->has_value() && waiting->has_value(); }));
  EXPECT_TRUE((*kept)->reply.ok());
  EXPECT_EQ((*kept)->kept, nullptr);
  EXPECT_TRUE((*waiting)->ok());
  EXPECT_EQ(keeper.wanted, 0);
}

// A function slower than the quick wait is finished on the pool's context; one that crashes
// the worker on a quick exchange has it replaced as any crash; a kept worker that died while
// idle never gets the task, and says so (the session runs the task elsewhere).
TEST_F(KeptWorkerTest, SlowCrashedAndDeadExchanges) {
  world_.script = StepFor;
  world_.quick = true;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  Keeper keeper;
  ASSERT_TRUE(RunAndKeep("first", keeper).ok());
  ASSERT_NE(keeper.lease, nullptr);
  EXPECT_TRUE(Await(keeper.lease->Exchange(TaskNamed("slow"), absl::InfiniteFuture())).ok());
  EXPECT_EQ(world_.quick_exchanges, 0);
  EXPECT_TRUE(Await(keeper.lease->Exchange(TaskNamed("a"), absl::InfiniteFuture())).ok());
  const pid_t first = *LivePids().begin();
  absl::StatusOr<Reply> crashed =
      Await(keeper.lease->Exchange(TaskNamed("crash"), absl::InfiniteFuture()));
  EXPECT_TRUE(absl::IsUnavailable(crashed.status())) << crashed.status();
  EXPECT_FALSE(keeper.lease->EndedBeforeTask());
  keeper.lease.reset();
  ASSERT_TRUE(RunAndKeep("b", keeper).ok());  // on the replacement
  EXPECT_NE(*LivePids().begin(), first);
  ASSERT_NE(keeper.lease, nullptr);
  // A slow reply turns the quick wait off; a worker that then dies idle is still found before
  // the next task is sent to it.
  EXPECT_TRUE(Await(keeper.lease->Exchange(TaskNamed("slow"), absl::InfiniteFuture())).ok());
  EXPECT_GT(world_.last_quick_wait, absl::ZeroDuration());

  world_.live.front()->DieNow("killed by signal 9 (Killed)");
  const size_t seen = world_.tasks_seen.size();
  absl::StatusOr<Reply> dead =
      Await(keeper.lease->Exchange(TaskNamed("never"), absl::InfiniteFuture()));
  EXPECT_TRUE(absl::IsUnavailable(dead.status())) << dead.status();
  EXPECT_TRUE(keeper.lease->EndedBeforeTask());
  EXPECT_EQ(world_.last_quick_wait, absl::ZeroDuration());
  EXPECT_EQ(world_.tasks_seen.size(), seen);
  keeper.lease.reset();
  EXPECT_TRUE(Run("c").ok());
  EXPECT_EQ(world_.start_attempts, 3);
}

// The OOM killer takes a kept worker while its session sends nothing: when the session gives it
// back, it is replaced, never handed to the next caller.
TEST_F(KeptWorkerTest, AKeptWorkerThatDiedIdleIsReplacedWhenGivenBack) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const pid_t first = *LivePids().begin();
  Keeper keeper;
  ASSERT_NO_FATAL_FAILURE(KeepAWorker(keeper));
  world_.live.front()->DieNow("killed by signal 9 (Killed)");
  RunUntil([&] { return world_.reaped.count(first) > 0; });
  absl::StatusOr<Reply> next = Run("next");  // asks the worker back, gets the replacement
  EXPECT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(keeper.wanted, 1);
  EXPECT_EQ(world_.start_attempts, 2);
  EXPECT_THAT(world_.tasks_seen, ::testing::ElementsAre("first", "next"));
}

// A session in lockstep gives the worker back and runs its next line at once: the worker over
// the cap must not be the one it gets again.
TEST_F(KeptWorkerTest, AKeptWorkerOverTheMemoryCapIsAskedBackAndReplaced) {
  world_.script = StepFor;
  PoolOptions options = Options(1);
  options.memory_cap_bytes = 100 << 20;
  options.memory_check_interval = absl::Milliseconds(5);
  ASSERT_TRUE(StartPool(options).ok());
  const pid_t first = *LivePids().begin();
  Keeper keeper;
  ASSERT_TRUE(RunAndKeep("first", keeper).ok());
  ASSERT_NE(keeper.lease, nullptr);
  world_.resident_bytes = 200 << 20;
  RunUntil([&] { return keeper.wanted == 1; });
  world_.resident_bytes = 1 << 20;
  keeper.lease.reset();
  ASSERT_TRUE(RunAndKeep("next", keeper).ok());
  EXPECT_TRUE(world_.killed.count(first));
  EXPECT_NE(world_.task_pids.back(), first);
  EXPECT_EQ(world_.start_attempts, 2);
  keeper.lease.reset();
}

// With --max-queue=0 a caller finding every worker busy is refused at once and could never get
// a worker given back: none is kept.
TEST_F(KeptWorkerTest, NoWorkerIsKeptWhenCallersCannotQueue) {
  world_.script = StepFor;
  PoolOptions options = Options(1);
  options.max_queue = 0;
  ASSERT_TRUE(StartPool(options).ok());
  Keeper keeper;
  ASSERT_TRUE(RunAndKeep("first", keeper).ok());
  EXPECT_EQ(keeper.lease, nullptr);
  EXPECT_TRUE(Run("other").ok());
}

// As a call's coroutine: it waits (for a client's next line, say), its call is cancelled
// meanwhile, and it then exchanges on its lease.
asio::awaitable<absl::StatusOr<Reply>> ExchangeAfterAWait(AsyncWorkerLease* lease, Task task) {
  co_await asio::this_coro::throw_if_cancelled(false);
  const asio::any_io_executor executor = co_await asio::this_coro::executor;
  asio::steady_timer wait(executor, std::chrono::hours(1));
  asio::error_code ended;
  co_await wait.async_wait(asio::redirect_error(asio::use_awaitable, ended));
  co_return co_await lease->Exchange(std::move(task), absl::InfiniteFuture());
}

// A call cancelled before its exchange on the kept worker starts sends nothing: the worker is
// not killed, and serves the next caller.
TEST_F(KeptWorkerTest, AnExchangeCancelledBeforeItStartsSendsNothing) {
  world_.script = StepFor;
  world_.quick = true;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const pid_t first = *LivePids().begin();
  Keeper keeper;
  ASSERT_TRUE(RunAndKeep("first", keeper).ok());
  ASSERT_NE(keeper.lease, nullptr);
  asio::cancellation_signal cancel;
  auto cancelled = Spawn(ExchangeAfterAWait(keeper.lease.get(), TaskNamed("never")), cancel.slot());
  io_.poll();  // waiting
  cancel.emit(asio::cancellation_type::terminal);
  RunUntil([&] { return cancelled->has_value(); });
  EXPECT_TRUE(absl::IsCancelled((*cancelled)->status())) << (*cancelled)->status();
  keeper.lease.reset();
  EXPECT_TRUE(Run("next").ok());
  EXPECT_FALSE(world_.killed.count(first));
  EXPECT_THAT(world_.tasks_seen, ::testing::ElementsAre("first", "next"));
}

TEST_F(KeptWorkerTest, EveryCallCountsAndTheLeaseAsksToGoBackAtTheLimit) {
  world_.script = StepFor;
  world_.quick = true;
  PoolOptions options = Options(1);
  options.max_calls_per_worker = 4;
  ASSERT_TRUE(StartPool(options).ok());
  const pid_t first = *LivePids().begin();
  Keeper keeper;
  ASSERT_TRUE(RunAndKeep("first", keeper).ok());
  ASSERT_NE(keeper.lease, nullptr);
  for (const char* name : {"a", "b"}) {
    ASSERT_TRUE(Await(keeper.lease->Exchange(TaskNamed(name), absl::InfiniteFuture())).ok());
    EXPECT_FALSE(keeper.lease->ShouldGiveBack());
  }
  ASSERT_TRUE(Await(keeper.lease->Exchange(TaskNamed("c"), absl::InfiniteFuture())).ok());
  EXPECT_TRUE(keeper.lease->ShouldGiveBack());
  keeper.lease.reset();
  ASSERT_TRUE(Run("d").ok());
  EXPECT_TRUE(world_.killed.count(first));
  EXPECT_EQ(world_.start_attempts, 2);
}

TEST_F(KeptWorkerTest, AReloadAsksForKeptWorkersBackAndReplacesThem) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const pid_t first = *LivePids().begin();
  Keeper keeper;
  ASSERT_NO_FATAL_FAILURE(KeepAWorker(keeper));
  pool_->ReloadAll();
  RunUntil([&] { return world_.start_attempts == 2; });
  EXPECT_EQ(keeper.wanted, 1);
  EXPECT_TRUE(world_.killed.count(first));
  EXPECT_TRUE(Run("a").ok());
}

// A batch uses the workers sessions keep once they are given back, and does not wait for one
// that is not given back before its tasks are done.
TEST_F(KeptWorkerTest, RunAllGetsKeptWorkersBackAndDoesNotWaitForThem) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(2)).ok());
  Keeper keeper;
  ASSERT_NO_FATAL_FAILURE(KeepAWorker(keeper));
  world_.task_pids.clear();
  std::vector<Task> tasks;
  for (int i = 0; i < 6; ++i) tasks.push_back(TaskNamed("slow"));
  std::vector<absl::StatusOr<Reply>> results =
      Await(pool_->RunAll(std::move(tasks), absl::InfiniteFuture()));
  for (const auto& r : results) EXPECT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(keeper.wanted, 1);
  EXPECT_EQ(std::set<pid_t>(world_.task_pids.begin(), world_.task_pids.end()), LivePids());

  Keeper holdout;  // never gives its worker back
  ASSERT_TRUE(RunAndKeep("second", holdout).ok());
  ASSERT_NE(holdout.lease, nullptr);
  world_.task_pids.clear();
  std::vector<Task> more;
  for (int i = 0; i < 3; ++i) more.push_back(TaskNamed("x"));
  results = Await(pool_->RunAll(std::move(more), absl::InfiniteFuture()));
  for (const auto& r : results) EXPECT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(holdout.wanted, 1);
  EXPECT_EQ(std::set<pid_t>(world_.task_pids.begin(), world_.task_pids.end()).size(), 1u);
  holdout.lease.reset();
  EXPECT_TRUE(Await(pool_->RunAll({TaskNamed("a"), TaskNamed("b")}, absl::InfiniteFuture()))[1].ok());
}

// A batch's feeder waiting for a worker a session keeps is not a caller in the queue:
// --max-queue counts callers. Before, it took a place, and with --max-queue=1 the next caller
// was refused ("1 calls are already queued") with no caller queued.
TEST_F(KeptWorkerTest, ABatchsFeederWaitingForAKeptWorkerTakesNoPlaceInTheQueue) {
  world_.script = StepFor;
  PoolOptions options = Options(2);
  options.max_queue = 1;
  ASSERT_TRUE(StartPool(options).ok());
  Keeper holdout;  // never gives its worker back
  ASSERT_TRUE(RunAndKeep("kept", holdout).ok());
  ASSERT_NE(holdout.lease, nullptr);
  std::vector<Task> tasks;
  for (int i = 0; i < 3; ++i) tasks.push_back(TaskNamed("slow"));
  auto batch = Spawn(pool_->RunAll(std::move(tasks), absl::InfiniteFuture()));
  ASSERT_TRUE(RunUntil([&] { return holdout.wanted == 1 && !world_.running.empty(); }));
  auto caller = Spawn(pool_->Run(TaskNamed("a"), absl::InfiniteFuture()));
  ASSERT_TRUE(RunUntil([&] { return batch->has_value() && caller->has_value(); }));
  EXPECT_TRUE((*caller)->ok()) << (*caller)->status();
  for (const auto& r : **batch) EXPECT_TRUE(r.ok()) << r.status();
  holdout.lease.reset();
}

TEST_F(AsyncWorkerPoolTest, ShutdownFailsWaitingCallersAndKillsBusyWorkers) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  const pid_t first = *LivePids().begin();
  auto busy = Spawn(pool_->Run(TaskNamed("hang"), absl::InfiniteFuture()));
  RunUntil([&] { return !world_.running.empty(); });
  auto queued = Spawn(pool_->Run(TaskNamed("queued"), absl::InfiniteFuture()));
  io_.poll();
  pool_->Shutdown();
  RunUntil([&] { return busy->has_value() && queued->has_value(); });
  EXPECT_TRUE(absl::IsUnavailable((*busy)->status()));
  EXPECT_THAT((*busy)->status().message(), HasSubstr("shut down before Validate of hang"));
  EXPECT_TRUE(absl::IsUnavailable((*queued)->status()));
  EXPECT_THAT((*queued)->status().message(), HasSubstr("shutting down"));
  EXPECT_TRUE(world_.killed.count(first));
  RunUntil([&] { return world_.reaped.count(first) > 0; });
  EXPECT_TRUE(absl::IsUnavailable(Run("late").status()));
  EXPECT_EQ(world_.start_attempts, 1);  // nothing restarted
}

// The callers of the server are coroutines on other threads: the call resumes on the caller's
// own executor, and its cancellation crosses over to the pool's thread.
TEST_F(AsyncWorkerPoolTest, ACallerOnAnotherThreadResumesThereAndCanCancel) {
  world_.script = StepFor;
  ASSERT_TRUE(StartPool(Options(1)).ok());
  asio::io_context caller;
  auto work = asio::make_work_guard(caller);
  std::thread caller_thread([&caller] { caller.run(); });
  auto pool_thread_work = asio::make_work_guard(io_);
  std::thread pool_thread([this] { io_.run(); });

  std::promise<bool> resumed_on_caller;
  asio::co_spawn(
      caller,
      [&]() -> asio::awaitable<void> {
        absl::StatusOr<Reply> reply = co_await pool_->Run(TaskNamed("a"), absl::InfiniteFuture());
        resumed_on_caller.set_value(reply.ok() && caller.get_executor().running_in_this_thread());
      },
      asio::detached);
  EXPECT_TRUE(resumed_on_caller.get_future().get());

  asio::cancellation_signal cancel;
  std::promise<absl::Status> cancelled;
  asio::co_spawn(caller, pool_->Run(TaskNamed("hang"), absl::InfiniteFuture()),
                 asio::bind_cancellation_slot(
                     cancel.slot(), [&](std::exception_ptr, absl::StatusOr<Reply> reply) {
                       cancelled.set_value(reply.status());
                     }));
  // Emit on the caller's thread once the task has reached the worker.
  std::promise<void> running;
  asio::post(io_, [&] {
    // Checked on the pool's thread, which owns the world.
    auto check = std::make_shared<std::function<void()>>();
    *check = [&, check] {
      if (!world_.running.empty()) {
        running.set_value();
      } else {
        asio::post(io_, *check);
      }
    };
    (*check)();
  });
  running.get_future().wait();
  asio::post(caller, [&] { cancel.emit(asio::cancellation_type::terminal); });
  absl::Status status = cancelled.get_future().get();
  EXPECT_TRUE(absl::IsCancelled(status)) << status;

  work.reset();
  caller_thread.join();
  // Shut down on the pool's thread and stop it once the killed workers are reaped, so
  // TearDown finds the pool quiet.
  std::promise<void> quiet;
  asio::post(io_, [&] {
    pool_->Shutdown();
    auto check = std::make_shared<std::function<void()>>();
    *check = [&, check] {
      if (world_.Alive() == 0) {
        quiet.set_value();
      } else {
        asio::post(io_, *check);
      }
    };
    (*check)();
  });
  quiet.get_future().wait();
  pool_thread_work.reset();
  io_.stop();
  pool_thread.join();
  io_.restart();
}

}  // namespace
}  // namespace cnp::pool::testing
