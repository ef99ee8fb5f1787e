// Workers scripted in C++ for the pool's policy tests: they answer, crash, hang, answer slowly,
// send garbage, ask to be recycled, refuse to start or never finish starting - as the test's
// script says - without any process. A FakeWorld records what happened (starts, tasks seen,
// kills, reaps) for the test to check.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "asio/steady_timer.hpp"
#include "service/pool/worker.h"

namespace cnp::pool::testing {

// What a fake worker does with one task.
struct FakeStep {
  enum Kind {
    kReply,    // answers `reply`, after `delay` if any (a slow function)
    kCrash,    // its process dies: the socket closes and it ended as `how`
    kHang,     // never answers (until killed or cancelled)
    kGarbage,  // sends something that is not a Reply
    kTooLarge,  // refuses the task before writing it: over the frame limit
  };
  Kind kind = kReply;
  Reply reply;
  absl::Duration delay = absl::ZeroDuration();
  std::string how = "killed by signal 11 (Segmentation fault)";
  // kReply: the worker dies right after it has answered, before the pool notices (its socket
  // closed, its end not yet reported).
  bool dies_after_reply = false;
  // kReply: before waiting out `delay`, a log() line (an interim task_log frame) after each of
  // these, one after another, for the listener ForwardLogsTo set (none: the waits only).
  std::vector<absl::Duration> logs_after;
};

// What a start attempt does.
struct FakeStart {
  // kDiesAtOnce: it comes up, and is dead by the time the pool sees it (killed right after
  // its handshake). kRefuseSetting: it answers its handshake refusing a setting it was started
  // with (Failure BAD_SETTING).
  enum Kind { kUp, kRefuse, kHang, kDiesAtOnce, kRefuseSetting };
  Kind kind = kUp;
  std::string why = "the worker exited with status 1";  // for kRefuse and kRefuseSetting
};

class FakeWorker;

class FakeWorld {
 public:
  // The script every worker follows; by default, a validate task named "x" answers an empty
  // Validate reply. Tasks are told apart by Validate's function name (TaskNamed).
  std::function<FakeStep(const Task&)> script = [](const Task&) {
    FakeStep step;
    step.reply.mutable_validate();
    return step;
  };
  // What start attempt `attempt` (counted from 0 over the whole world) of slot `index` does.
  std::function<FakeStart(int index, int attempt)> starts = [](int, int) { return FakeStart{}; };
  // Resident bytes every worker reports, but those listed by pid.
  int64_t resident_bytes = 1 << 20;
  std::map<pid_t, int64_t> resident_bytes_of;
  // Whether workers take quick exchanges (Worker::TryQuickExchange): a reply with no delay is
  // then answered on the spot; a slow or hung one is left pending.
  bool quick = false;

  // What happened.
  int start_attempts = 0;
  std::vector<absl::Time> start_times;
  // Live workers (not yet destroyed) when each start attempt began.
  std::vector<int> alive_at_start;
  std::vector<std::string> tasks_seen;  // names of the tasks that reached a worker
  std::vector<pid_t> task_pids;         // and the worker each reached
  int quick_exchanges = 0;              // answered by TryQuickExchange
  int logs_forwarded = 0;               // interim log lines handed to a listener
  std::vector<bool> logs_early_asked;   // each task's Task.logs_early
  absl::Duration last_quick_wait = absl::InfiniteDuration();  // the wait it was last given
  std::set<pid_t> killed;               // Kill() called on it
  std::set<pid_t> reaped;               // Ended() reported its end
  std::set<pid_t> running;              // workers in the middle of an exchange
  std::vector<FakeWorker*> live;        // created and not destroyed
  pid_t next_pid = 1000;

  // Workers that have not been killed or crashed.
  int Alive() const;
};

// A Validate task whose function is `name`; the default script and tests key on it.
Task TaskNamed(const std::string& name);
const std::string& NameOf(const Task& task);

class FakeWorker final : public Worker {
 public:
  FakeWorker(FakeWorld& world, const asio::any_io_executor& executor);
  ~FakeWorker() override;

  asio::awaitable<absl::StatusOr<Reply>> Exchange(const Task& task) override;
  QuickExchange TryQuickExchange(const Task& task, absl::Duration wait) override;
  asio::awaitable<absl::StatusOr<Reply>> FinishExchange() override;
  void ForwardLogsTo(TaskLogListener* listener) override { logs_ = listener; }
  void Kill() override;
  asio::awaitable<std::optional<std::string>> Ended() override;
  pid_t pid() const override { return pid_; }
  int64_t ResidentBytes() const override {
    auto listed = world_.resident_bytes_of.find(pid());
    return listed == world_.resident_bytes_of.end() ? world_.resident_bytes : listed->second;
  }
  // A fake maps no more than it holds.
  int64_t AddressSpaceBytes() const override { return ResidentBytes(); }

  bool ended() const { return !how_ended_.empty(); }
  // The process dies on its own, between tasks.
  void DieNow(std::string how) { End(std::move(how)); }
  // The same, but its end is not reported (Ended()) until it is killed: the moment between a
  // process's socket closing and its pidfd being read.
  void DieUnnoticed() { dead_unnoticed_ = true; }
  bool EndedWhileIdle() override { return ended() || dead_unnoticed_; }

 private:
  void End(std::string how);
  // The task reaches the worker: what of the step happens at once, or nothing if it must be
  // awaited (AwaitStep).
  std::optional<absl::StatusOr<Reply>> Begin(const Task& task, FakeStep& step);
  asio::awaitable<absl::StatusOr<Reply>> AwaitStep(FakeStep step);
  FakeStep pending_;  // a quick exchange's step left for FinishExchange
  TaskLogListener* logs_ = nullptr;  // ForwardLogsTo's
  bool dead_unnoticed_ = false;

  FakeWorld& world_;
  const pid_t pid_;
  std::string how_ended_;
  asio::steady_timer answer_;  // a slow or hung answer waits on it; Kill cancels it
  asio::steady_timer ended_;   // Ended() waits on it; cancelled when the worker ends
};

class FakeWorkerFactory final : public WorkerFactory {
 public:
  explicit FakeWorkerFactory(FakeWorld& world) : world_(world) {}
  asio::awaitable<absl::StatusOr<std::unique_ptr<Worker>>> Start(int index,
                                                                 absl::Duration timeout) override;

 private:
  FakeWorld& world_;
};

}  // namespace cnp::pool::testing
