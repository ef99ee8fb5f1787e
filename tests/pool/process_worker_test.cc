// The pool with real cnp-worker processes (ProcessWorker): an exchange, a crash mid-task, a
// deadline mid-task, cancellation of a running and of a queued task, and a cancelled
// 100,000-document batch that frees its workers at once.
//
// The pool's context runs on its own thread, as in the server; the test thread waits on FIFOs
// that svc_fns.waits opens when the call has reached Python (no sleeps).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/co_spawn.hpp"
#include "asio/executor_work_guard.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/pool/async_worker_pool.h"
#include "service/pool/blocking_task_runner.h"
#include "service/pool/process_worker.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"

namespace cnp::pool {
namespace {

using ::testing::HasSubstr;

using ::cnp::testing::MakeTempDir;
using ::cnp::testing::Runfile;

Task MapTask(const std::string& function, const std::vector<std::string>& docs) {
  Task task;
  task.mutable_map()->add_functions(function);
  for (const std::string& doc : docs) task.mutable_map()->add_docs(doc);
  return task;
}

// A call that blocks in Python until released: svc_fns.waits opens `ready` (a FIFO the test
// opens for reading, which returns once the call is in Python) and reads `release`.
struct Gate {
  explicit Gate(const std::string& name)
      : dir(MakeTempDir(name)), ready(dir + "/ready"), release(dir + "/release") {
    EXPECT_EQ(::mkfifo(ready.c_str(), 0600), 0);
    EXPECT_EQ(::mkfifo(release.c_str(), 0600), 0);
  }
  std::string Doc(const std::string& id) const {
    return absl::StrCat(R"({"_id":")", id, R"(","ready":")", ready, R"(","release":")", release,
                        R"("})");
  }
  // Returns once the worker has opened `ready`.
  void AwaitReached() const {
    int fd = ::open(ready.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ::close(fd);
  }
  void Open() const {
    int fd = ::open(release.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ::close(fd);
  }
  std::string dir, ready, release;
};

bool ProcessGone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

class ProcessWorkerPoolTest : public ::testing::Test {
 protected:
  void StartPool(int workers) {
    PoolOptions options;
    options.workers = workers;
    WorkerCommand command{Runfile("service/worker/cnp-worker"),
                          {"--fd=3", "--python-path=" + Runfile("tests/functions/server")}};
    pool_ = std::make_unique<AsyncWorkerPool>(
        options, std::make_unique<ProcessWorkerFactory>(command), io_);
    ASSERT_TRUE(pool_->Start().ok());
    thread_ = std::thread([this] { io_.run(); });
    blocking_ = std::make_unique<BlockingTaskRunner>(*pool_, io_);
  }

  void TearDown() override {
    if (pool_ == nullptr) return;
    pool_->Shutdown();
    work_.reset();
    io_.stop();
    thread_.join();
    pool_.reset();
  }

  // Starts `call` on the pool's context with a cancellation signal the test can emit.
  template <class T>
  std::future<T> Spawn(asio::awaitable<T> call, asio::cancellation_signal& cancel) {
    auto promise = std::make_shared<std::promise<T>>();
    std::future<T> future = promise->get_future();
    asio::co_spawn(io_, std::move(call),
                   asio::bind_cancellation_slot(cancel.slot(),
                                                [promise](std::exception_ptr, T value) {
                                                  promise->set_value(std::move(value));
                                                }));
    return future;
  }
  void Cancel(asio::cancellation_signal& cancel) {
    asio::post(io_, [&cancel] { cancel.emit(asio::cancellation_type::terminal); });
  }

  pid_t WorkerPid() {
    absl::StatusOr<Reply> reply =
        blocking_->Run(MapTask("svc_fns.pid", {R"({"_id":"p"})"}), absl::Now() + absl::Seconds(30));
    EXPECT_TRUE(reply.ok()) << reply.status();
    if (!reply.ok()) return -1;
    std::string rows = reply->map().results(0).rows();  // [[["pid",1234]]]
    return std::atoi(rows.substr(rows.find(',') + 1).c_str());
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::unique_ptr<AsyncWorkerPool> pool_;
  std::unique_ptr<BlockingTaskRunner> blocking_;
  std::thread thread_;
};

// A worker that ends before it answers its first task (here: an argument it does not know)
// is UNAVAILABLE, and the error says how it ended, for the operator's log.
TEST(ProcessWorkerTest, AWorkerThatEndsBeforeItsFirstAnswerSaysHowItEnded) {
  ProcessWorkerFactory factory(
      WorkerCommand{Runfile("service/worker/cnp-worker"), {"--fd=3", "--no-such-argument"}});
  asio::io_context io;
  std::optional<absl::StatusOr<std::unique_ptr<ProcessWorker>>> started;
  asio::co_spawn(io, factory.StartProcess(absl::Seconds(30)),
                 [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<ProcessWorker>> worker) {
                   started = std::move(worker);
                 });
  io.run();
  ASSERT_TRUE(started.has_value());
  ASSERT_FALSE(started->ok());
  EXPECT_EQ(started->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(started->status().message()),
              HasSubstr("; the worker exited with status 2"));
}

TEST_F(ProcessWorkerPoolTest, ExchangesATaskWithAWorkerProcess) {
  StartPool(1);
  absl::StatusOr<Reply> reply = blocking_->Run(
      MapTask("svc_fns.doubled", {R"({"_id":"a","n":21})"}), absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->map().results(0).rows(), R"([[["a",42]]])");
}

// A 4 MB document in, its 4 MB town out: the exchange grows both buffers that far, and gives
// the memory back once it is over instead of keeping it for the worker's life.
TEST(ProcessWorkerTest, ALargeExchangeDoesNotLeaveItsBuffersBehind) {
  asio::io_context io;
  WorkerCommand command{Runfile("service/worker/cnp-worker"),
                        {"--fd=3", "--python-path=" + Runfile("tests/functions/server")}};
  ProcessWorkerFactory factory(command);
  const std::string town(4 << 20, 'x');
  // Built out here: GCC 12 cannot take string literals inside a co_await's operands.
  const Task small_task = MapTask("svc_fns.by_town|7", {R"({"_id":"s","town":"Oslo","n":1})"});
  const Task large_task = MapTask(
      "svc_fns.by_town|7", {absl::StrCat(R"({"_id":"l","town":")", town, R"(","n":2})")});
  std::string rows;
  size_t held_after_small = 0, held_after_large = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        absl::StatusOr<std::unique_ptr<ProcessWorker>> worker =
            co_await factory.StartProcess(absl::Seconds(30));
        EXPECT_TRUE(worker.ok()) << worker.status();
        if (!worker.ok()) co_return;
        absl::StatusOr<Reply> small = co_await (*worker)->Exchange(small_task);
        EXPECT_TRUE(small.ok()) << small.status();
        held_after_small = (*worker)->BufferBytes();
        absl::StatusOr<Reply> large = co_await (*worker)->Exchange(large_task);
        EXPECT_TRUE(large.ok()) << large.status();
        if (large.ok() && large->map().results_size() == 1) {
          rows = large->map().results(0).rows();
        } else if (large.ok()) {
          ADD_FAILURE() << large->ShortDebugString().substr(0, 300);
        }
        held_after_large = (*worker)->BufferBytes();
        (*worker)->Kill();
        co_await (*worker)->Ended();
      },
      asio::detached);
  io.run();
  EXPECT_EQ(rows.size(), town.size() + 10);  // [[["xxx…",2]]]
  EXPECT_GT(held_after_small, 0u);
  EXPECT_LT(held_after_large, size_t{1} << 20);
}

// A leaseholder's exchange on its own thread (TryQuickExchange, what a Session stream's kept
// worker does per line): a reply that comes within the wait is read right there; a function
// slower than the wait leaves the exchange pending, and the pool's context finishes it with
// the right reply; a worker that died while idle is noticed before the task is sent.
TEST(ProcessWorkerTest, AQuickExchangeReadsAFastReplyAndLeavesASlowOneToThePoolsContext) {
  using Outcome = QuickExchange::Outcome;
  asio::io_context io;
  WorkerCommand command{Runfile("service/worker/cnp-worker"),
                        {"--fd=3", "--python-path=" + Runfile("tests/functions/server")}};
  ProcessWorkerFactory factory(command);
  std::unique_ptr<ProcessWorker> worker;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        absl::StatusOr<std::unique_ptr<ProcessWorker>> started =
            co_await factory.StartProcess(absl::Seconds(30));
        EXPECT_TRUE(started.ok()) << started.status();
        if (started.ok()) worker = *std::move(started);
      },
      asio::detached);
  io.run();
  ASSERT_NE(worker, nullptr);

  QuickExchange fast = worker->TryQuickExchange(
      MapTask("svc_fns.doubled", {R"({"_id":"a","n":21})"}), absl::Seconds(30));
  ASSERT_EQ(fast.outcome, Outcome::kDone);
  ASSERT_TRUE(fast.reply.ok()) << fast.reply.status();
  EXPECT_EQ(fast.reply->map().results(0).rows(), R"([[["a",42]]])");

  // The function waits for the gate: 1 ms of waiting gets no reply.
  Gate gate("quick");
  QuickExchange slow =
      worker->TryQuickExchange(MapTask("svc_fns.waits", {gate.Doc("g")}), absl::Milliseconds(1));
  ASSERT_EQ(slow.outcome, Outcome::kPending);
  gate.AwaitReached();
  gate.Open();
  absl::StatusOr<Reply> finished = absl::UnknownError("not finished");
  io.restart();
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { finished = co_await worker->FinishExchange(); },
      asio::detached);
  io.run();
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_EQ(finished->map().results(0).rows(), R"([[["released","g"]]])");

  // Killed while idle (as the OOM killer would): the next task is not sent to it.
  ASSERT_EQ(::kill(worker->pid(), SIGKILL), 0);
  io.restart();
  asio::co_spawn(io, [&]() -> asio::awaitable<void> { co_await worker->Ended(); },
                 asio::detached);
  io.run();
  QuickExchange after = worker->TryQuickExchange(
      MapTask("svc_fns.doubled", {R"({"_id":"b","n":1})"}), absl::Seconds(30));
  EXPECT_EQ(after.outcome, Outcome::kEndedBefore);
}

// A worker that ignores its task's answer limit (fake_worker.py --announce-bytes): its reply
// is refused from the length in its header, before a byte more is read, and the exchange says so
// (OUT_OF_RANGE); the receive buffer never grows towards the announced 512 MiB.
TEST(ProcessWorkerTest, AReplyAnnouncedOverTheTasksLimitIsRefusedUnread) {
  asio::io_context io;
  WorkerCommand command{"/usr/bin/python3.11",
                        {"tests/support/fake_worker.py", "--announce-bytes=536870912"}};
  ProcessWorkerFactory factory(command);
  Task task = MapTask("svc_fns.echo", {R"({"_id":"a"})"});
  task.set_max_answer_bytes(1 << 20);
  absl::Status status;
  size_t held = 0;
  pid_t pid = -1;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        absl::StatusOr<std::unique_ptr<ProcessWorker>> worker =
            co_await factory.StartProcess(absl::Seconds(30));
        EXPECT_TRUE(worker.ok()) << worker.status();
        if (!worker.ok()) co_return;
        pid = (*worker)->pid();
        status = (co_await (*worker)->Exchange(task)).status();
        held = (*worker)->BufferBytes();
        (*worker)->Kill();
        co_await (*worker)->Ended();
      },
      asio::detached);
  io.run();
  EXPECT_TRUE(absl::IsOutOfRange(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr("536870912"));
  EXPECT_THAT(status.message(), HasSubstr("1048576"));
  EXPECT_LT(held, size_t{1} << 20);
  EXPECT_TRUE(ProcessGone(pid));
}

// Takes a task's log lines as a CouchDB session's listener would.
class LineCollector final : public TaskLogListener {
 public:
  absl::Time OnLog(Reply interim) override {
    lines.push_back(interim.task_log().message());
    return absl::InfinitePast();
  }
  std::vector<std::string> lines;
};

// Runs one exchange of `task` with a fake_worker.py started with `argument`, with `listener`
// (may be null) taking its log lines; `quick`: through TryQuickExchange.
absl::StatusOr<Reply> ExchangeWithFake(const std::string& argument, const Task& task,
                                       TaskLogListener* listener, bool quick) {
  asio::io_context io;
  ProcessWorkerFactory factory(
      WorkerCommand{"/usr/bin/python3.11", {"tests/support/fake_worker.py", argument}});
  absl::StatusOr<Reply> reply = absl::UnknownError("not run");
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        absl::StatusOr<std::unique_ptr<ProcessWorker>> worker =
            co_await factory.StartProcess(absl::Seconds(30));
        EXPECT_TRUE(worker.ok()) << worker.status();
        if (!worker.ok()) co_return;
        (*worker)->ForwardLogsTo(listener);
        if (quick) {
          QuickExchange exchange = (*worker)->TryQuickExchange(task, absl::Seconds(10));
          EXPECT_EQ(exchange.outcome, QuickExchange::Outcome::kDone);
          reply = std::move(exchange.reply);
        } else {
          reply = co_await (*worker)->Exchange(task);
        }
        (*worker)->ForwardLogsTo(nullptr);
        (*worker)->Kill();
        co_await (*worker)->Ended();
      },
      asio::detached);
  io.run();
  return reply;
}

// A reply that answers another task than the one sent (fake_worker.py --stale-replies echoes
// the task before's number, as a late reply from a child a function forked would) is refused:
// the exchange fails DATA_LOSS naming both numbers, never returning that reply as the answer.
TEST(ProcessWorkerTest, AReplyToAnotherTaskIsRefused) {
  absl::StatusOr<Reply> reply = ExchangeWithFake(
      "--stale-replies", MapTask("svc_fns.echo", {R"({"_id":"a"})"}), nullptr, false);
  EXPECT_TRUE(absl::IsDataLoss(reply.status())) << reply.status();
  EXPECT_THAT(reply.status().message(), HasSubstr("answered task #1 when task #2 was due"));
}

// A task's log lines come as interim frames before its reply, here all in one write with it:
// each goes to the listener, and the reply after them is the exchange's answer.
TEST(ProcessWorkerTest, LogLinesBeforeTheReplyGoToTheListener) {
  Task task = MapTask("svc_fns.echo", {R"({"_id":"a"})"});
  task.set_logs_early(true);
  for (const bool quick : {false, true}) {
    LineCollector listener;
    absl::StatusOr<Reply> reply = ExchangeWithFake("--log-lines=3", task, &listener, quick);
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_TRUE(reply->has_resolve());
    EXPECT_THAT(listener.lines, ::testing::ElementsAre("line 0", "line 1", "line 2"))
        << (quick ? "quick" : "on the context");
  }
}

// A log line sent to an exchange that takes none is a fault: the worker's state is unknown.
TEST(ProcessWorkerTest, ALogLineNoOneAskedForIsRefused) {
  absl::StatusOr<Reply> reply = ExchangeWithFake(
      "--log-lines=1", MapTask("svc_fns.echo", {R"({"_id":"a"})"}), nullptr, false);
  EXPECT_TRUE(absl::IsDataLoss(reply.status())) << reply.status();
  EXPECT_THAT(reply.status().message(), HasSubstr("sent a log line its task did not ask for"));
}

// A pool of tests/support/fake_worker.py processes started with `fake_argument`, whose context
// runs on a thread of its own; stopped and joined when it goes.
struct FakeWorkerPool {
  FakeWorkerPool(const PoolOptions& options, const std::string& fake_argument)
      : pool(options,
             std::make_unique<ProcessWorkerFactory>(WorkerCommand{
                 "/usr/bin/python3.11", {"tests/support/fake_worker.py", fake_argument}}),
             io),
        started(pool.Start()) {
    if (started.ok()) thread = std::thread([this] { io.run(); });
  }
  ~FakeWorkerPool() {
    if (!thread.joinable()) return;
    pool.Shutdown();
    work.reset();
    io.stop();
    thread.join();
  }
  absl::StatusOr<Reply> RunEcho() {
    return blocking.Run(MapTask("svc_fns.echo", {R"({"_id":"a"})"}), absl::Now() + absl::Seconds(30));
  }

  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  AsyncWorkerPool pool;
  absl::Status started;
  std::thread thread;
  BlockingTaskRunner blocking{pool, io};
};

// In the pool: each call fails (the caller never gets the reply to another task), and the
// worker is killed and replaced each time.
TEST(ProcessWorkerPoolAnswerTest, AReplyToAnotherTaskKillsAndReplacesTheWorker) {
  PoolOptions options;
  options.workers = 1;
  FakeWorkerPool pool(options, "--stale-replies");
  ASSERT_TRUE(pool.started.ok()) << pool.started;
  for (int call = 0; call < 2; ++call) {
    absl::StatusOr<Reply> reply = pool.RunEcho();
    EXPECT_FALSE(reply.ok()) << reply->ShortDebugString();
    EXPECT_THAT(reply.status().message(), HasSubstr("when task #2 was due"));
  }
}

// In the pool: the call fails RESOURCE_EXHAUSTED naming the limit and the flag, the worker is
// killed and replaced (its reply's rest is still in the socket), and the next call is served
// by the replacement (which misbehaves the same way here).
TEST(ProcessWorkerPoolAnswerTest, AnOversizedReplyKillsAndReplacesTheWorker) {
  PoolOptions options;
  options.workers = 1;
  options.max_answer_bytes = 1 << 20;
  FakeWorkerPool pool(options, "--announce-bytes=536870912");
  ASSERT_TRUE(pool.started.ok()) << pool.started;
  for (int call = 0; call < 2; ++call) {
    absl::StatusOr<Reply> reply = pool.RunEcho();
    EXPECT_TRUE(absl::IsResourceExhausted(reply.status())) << reply.status();
    EXPECT_THAT(reply.status().message(), HasSubstr("1048576"));
    EXPECT_THAT(reply.status().message(), HasSubstr("--max-call-bytes"));
  }
}

TEST_F(ProcessWorkerPoolTest, ACrashMidTaskIsUnavailableAndTheWorkerIsReplaced) {
  StartPool(1);
  const pid_t before = WorkerPid();
  absl::StatusOr<Reply> reply = blocking_->Run(MapTask("svc_fns.segfaults", {R"({"_id":"a"})"}),
                                               absl::Now() + absl::Seconds(30));
  EXPECT_TRUE(absl::IsUnavailable(reply.status())) << reply.status();
  EXPECT_THAT(reply.status().message(), HasSubstr("killed by signal 11"));
  const pid_t after = WorkerPid();
  EXPECT_NE(after, before);
  EXPECT_TRUE(ProcessGone(before));
}

TEST_F(ProcessWorkerPoolTest, ADeadlineMidTaskKillsAndReplacesTheWorker) {
  StartPool(1);
  const pid_t before = WorkerPid();
  absl::StatusOr<Reply> reply = blocking_->Run(MapTask("svc_fns.spins", {R"({"_id":"a"})"}),
                                               absl::Now() + absl::Milliseconds(300));
  EXPECT_TRUE(absl::IsDeadlineExceeded(reply.status())) << reply.status();
  EXPECT_THAT(reply.status().message(), HasSubstr("did not finish before the deadline"));
  EXPECT_NE(WorkerPid(), before);
  EXPECT_TRUE(ProcessGone(before));
}

// "At once" below is a bound of 5 s, against a task that would never end (it waits on its gate):
// wide enough for a shared, loaded CI machine, and still far from the slow path.
constexpr absl::Duration kAtOnce = absl::Seconds(5);

TEST_F(ProcessWorkerPoolTest, CancellingARunningTaskKillsItsWorkerAtOnce) {
  StartPool(1);
  const pid_t before = WorkerPid();
  Gate gate("running");
  asio::cancellation_signal cancel;
  auto result = Spawn(pool_->Run(MapTask("svc_fns.waits", {gate.Doc("a")}), absl::InfiniteFuture()),
                      cancel);
  gate.AwaitReached();
  const absl::Time cancelled_at = absl::Now();
  Cancel(cancel);
  ASSERT_EQ(result.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_LT(absl::Now() - cancelled_at, kAtOnce);
  absl::StatusOr<Reply> reply = result.get();
  EXPECT_TRUE(absl::IsCancelled(reply.status())) << reply.status();
  EXPECT_NE(WorkerPid(), before);
  EXPECT_TRUE(ProcessGone(before));
}

// A worker killed mid-task (cancelled here; a deadline and recycling kill the same way) takes
// what its function started with it: a subprocess must not run on out of reach of
// --call-timeout and of the memory check, which reads the worker's own pid.
TEST_F(ProcessWorkerPoolTest, AKilledWorkerTakesTheProcessesItsFunctionStartedWithIt) {
  StartPool(1);
  Gate gate("group");
  const std::string held = gate.dir + "/held";
  ASSERT_EQ(::mkfifo(held.c_str(), 0600), 0);
  // Opened first, so that the function's open for writing does not wait for a reader.
  const int child_alive = ::open(held.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(child_alive, 0);
  std::string doc = gate.Doc("a");
  doc.insert(doc.size() - 1, absl::StrCat(R"(,"held":")", held, R"(")"));
  asio::cancellation_signal cancel;
  auto result = Spawn(pool_->Run(MapTask("svc_fns.starts_a_child", {doc}), absl::InfiniteFuture()),
                      cancel);
  gate.AwaitReached();
  Cancel(cancel);
  ASSERT_EQ(result.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_TRUE(absl::IsCancelled(result.get().status()));
  // The write end closes when the last process holding it ends: the child, once killed.
  pollfd hang_up{.fd = child_alive, .events = POLLIN, .revents = 0};
  EXPECT_EQ(::poll(&hang_up, 1, 30000), 1) << "the function's child is still running";
  EXPECT_TRUE(hang_up.revents & POLLHUP);
  ::close(child_alive);
}

// A worker that ends by itself (a crash here; a direct session's watchdog the same way) is
// reaped with its group killed first: what its function started does not outlive it either.
TEST_F(ProcessWorkerPoolTest, AWorkerThatDiesTakesTheProcessesItsFunctionStartedWithIt) {
  StartPool(1);
  const std::string held = MakeTempDir("crash-group") + "/held";
  ASSERT_EQ(::mkfifo(held.c_str(), 0600), 0);
  const int child_alive = ::open(held.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(child_alive, 0);
  absl::StatusOr<Reply> reply = blocking_->Run(
      MapTask("svc_fns.starts_a_child_and_dies", {absl::StrCat(R"({"_id":"a","held":")", held, R"("})")}),
      absl::Now() + absl::Seconds(30));
  EXPECT_TRUE(absl::IsUnavailable(reply.status())) << reply.status();
  pollfd hang_up{.fd = child_alive, .events = POLLIN, .revents = 0};
  EXPECT_EQ(::poll(&hang_up, 1, 30000), 1) << "the function's child is still running";
  EXPECT_TRUE(hang_up.revents & POLLHUP);
  ::close(child_alive);
}

TEST_F(ProcessWorkerPoolTest, ACancelledQueuedTaskIsDroppedAndTheBusyWorkerKept) {
  StartPool(1);
  const pid_t before = WorkerPid();
  Gate gate("queued");
  asio::cancellation_signal busy_cancel, queued_cancel;
  auto busy = Spawn(pool_->Run(MapTask("svc_fns.waits", {gate.Doc("a")}), absl::InfiniteFuture()),
                    busy_cancel);
  gate.AwaitReached();
  auto queued = Spawn(pool_->Run(MapTask("svc_fns.pid", {R"({"_id":"q"})"}), absl::InfiniteFuture()),
                      queued_cancel);
  Cancel(queued_cancel);
  ASSERT_EQ(queued.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(absl::IsCancelled(queued.get().status()));
  gate.Open();
  absl::StatusOr<Reply> released = busy.get();
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(released->map().results(0).rows(), R"([[["released","a"]]])");
  EXPECT_EQ(WorkerPid(), before);
}

TEST_F(ProcessWorkerPoolTest, ACancelledHundredThousandDocumentMapFreesItsWorkersAtOnce) {
  StartPool(2);
  Gate first("batch0"), second("batch1");
  std::vector<Task> tasks;
  for (const Gate* gate : {&first, &second}) {
    std::vector<std::string> docs;
    for (int i = 0; i < 50000; ++i) docs.push_back(gate->Doc(absl::StrCat("d", i)));
    tasks.push_back(MapTask("svc_fns.waits", docs));
  }
  asio::cancellation_signal cancel;
  auto results = Spawn(pool_->RunAll(std::move(tasks), absl::InfiniteFuture()), cancel);
  first.AwaitReached();
  second.AwaitReached();
  const absl::Time cancelled_at = absl::Now();
  Cancel(cancel);
  ASSERT_EQ(results.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_LT(absl::Now() - cancelled_at, kAtOnce);
  for (const auto& r : results.get()) EXPECT_TRUE(absl::IsCancelled(r.status())) << r.status();
  // Both workers were replaced and serve again.
  absl::StatusOr<Reply> after = blocking_->Run(
      MapTask("svc_fns.doubled", {R"({"_id":"a","n":1})"}), absl::Now() + absl::Seconds(30));
  EXPECT_TRUE(after.ok()) << after.status();
}

TEST_F(ProcessWorkerPoolTest, TheBlockingFacadeRefusesToBlockThePoolsOwnThread) {
  StartPool(1);
  std::promise<absl::Status> refused;
  asio::post(io_, [&] {
    refused.set_value(blocking_->Run(MapTask("svc_fns.pid", {R"({"_id":"p"})"}),
                                     absl::InfiniteFuture())
                          .status());
  });
  absl::Status status = refused.get_future().get();
  EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
}

}  // namespace
}  // namespace cnp::pool
