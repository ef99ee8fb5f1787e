#include "service/pool/worker_pool.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/post.hpp"
#include "asio/redirect_error.hpp"
#include "asio/use_awaitable.hpp"
#include "service/common/framing.h"
#include "service/common/log.h"
#include "service/common/long_wait.h"
#include "service/metrics/service_metrics.h"
#include "service/pool/task_description.h"
#include "service/pool/worker_startup.h"

namespace cnp::pool {
namespace {

constexpr absl::string_view kNotRun = "task was not run";

// How long reload requests must stop coming before the merged follow-up reload starts.
constexpr absl::Duration kReloadQuiet = absl::Milliseconds(500);


}  // namespace

class WorkerPool::LeaseImpl final : public WorkerLease {
 public:
  LeaseImpl(WorkerPool& pool, Slot* slot) : pool_(pool), slot_(slot) {}
  ~LeaseImpl() override { pool_.Release(slot_, nullptr, failure_); }

  absl::StatusOr<Reply> Exchange(const Task& task, absl::Time deadline) override {
    if (!failure_.ok()) return failure_;
    absl::StatusOr<Reply> reply = pool_.ExchangeOn(slot_, task, deadline);
    if (!reply.ok()) failure_ = reply.status();
    return reply;
  }

 private:
  WorkerPool& pool_;
  Slot* slot_;
  absl::Status failure_;
};

WorkerPool::WorkerPool(PoolOptions options, asio::io_context& control)
    : options_(std::move(options)), control_(control), wake_(control) {
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < options_.workers; ++i) {
    auto slot = std::make_unique<Slot>();
    slot->index = i;
    slots_.push_back(std::move(slot));
  }
}

WorkerPool::~WorkerPool() { Shutdown(); }

absl::Status WorkerPool::Start() {
  asio::co_spawn(control_, Maintain(), asio::detached);
  // Run the control loop here until every worker has either come up or failed once.
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      bool settled = std::all_of(slots_.begin(), slots_.end(), [](const auto& s) {
        return s->state == State::kIdle || s->consecutive_failures > 0;
      });
      if (settled) {
        if (!idle_.empty()) return absl::OkStatus();
        return absl::UnavailableError(absl::StrCat(
            "no worker could start: ", slots_.front()->last_failure,
            ". Check --worker-binary and --python-path; the worker's own message is above."));
      }
    }
    control_.run_one();
  }
}

void WorkerPool::Kick() {
  asio::post(control_, [this] { wake_.cancel(); });
}

void WorkerPool::MarkDown(Slot* slot, absl::Duration delay, std::string why) {
  slot->state = shutting_down_ ? State::kStopped : State::kDown;
  slot->restart_at = absl::Now() + delay;
  slot->last_failure = std::move(why);
}

asio::awaitable<void> WorkerPool::Maintain() {
  absl::Time next_memory_check = absl::Now();
  for (;;) {
    absl::Time next_due = absl::Now() + absl::Seconds(2);
    std::vector<Slot*> due;
    std::vector<std::unique_ptr<WorkerProcess>> doomed;
    {
      absl::MutexLock lock(&mu_);
      if (shutting_down_) co_return;
      const absl::Time now = absl::Now();
      bool starting = false;
      for (auto& slot : slots_) {
        if (slot->state == State::kStarting) starting = true;
        if (slot->state != State::kDown) continue;
        if (slot->restart_at <= now) {
          slot->state = State::kStarting;
          due.push_back(slot.get());
        } else {
          next_due = std::min(next_due, slot->restart_at);
        }
      }
      if (!ReloadRunning()) {
        if (reload_pending_ && now < last_reload_request_ + kReloadQuiet) {
          next_due = std::min(next_due, last_reload_request_ + kReloadQuiet);
        } else if (reload_pending_) {
          reload_pending_ = false;
          ++generation_;
          reload_announced_ = false;
          LogInfo("reloading every worker again, for the reloads asked for meanwhile");
        } else if (!reload_announced_) {
          reload_announced_ = true;
          if (generation_ > 0) LogInfo("reload finished: every worker runs freshly imported code");
        }
      }
      // Rolling reload: replace one stale idle worker at a time so the others keep serving.
      if (!starting && due.empty()) {
        for (auto it = idle_.begin(); it != idle_.end(); ++it) {
          if ((*it)->generation < generation_) {
            Slot* slot = *it;
            idle_.erase(it);
            metrics::WorkerExited("reload");
            slot->state = State::kStarting;
            doomed.push_back(std::move(slot->process));
            due.push_back(slot);
            break;
          }
        }
      }
      if (options_.max_resident_bytes > 0 && now >= next_memory_check) {
        next_memory_check = now + absl::Seconds(2);
        for (auto it = idle_.begin(); it != idle_.end();) {
          Slot* slot = *it;
          int64_t rss = slot->process->ResidentBytes();
          metrics::WorkerResident(slot->index, rss);
          if (rss > options_.max_resident_bytes) {
            LogWarning("worker ", slot->index, " (pid ", slot->process->pid(), ") holds ",
                       rss >> 20, " MiB, over the ", options_.max_resident_bytes >> 20,
                       " MiB cap: replacing it");
            doomed.push_back(std::move(slot->process));
            metrics::WorkerExited("memory");
            MarkDown(slot, absl::ZeroDuration(), "over its memory cap");
            next_due = now;
            it = idle_.erase(it);
          } else {
            ++it;
          }
        }
      }
    }
    doomed.clear();  // kills outside the lock
    for (Slot* slot : due) asio::co_spawn(control_, StartWorker(slot), asio::detached);
    if (!due.empty()) continue;

    absl::Duration wait = std::max(next_due - absl::Now(), absl::ZeroDuration());
    wake_.expires_after(absl::ToChronoNanoseconds(wait));
    asio::error_code ec;
    co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<void> WorkerPool::StartWorker(Slot* slot) {
  uint64_t generation;
  int index;
  {
    absl::MutexLock lock(&mu_);
    generation = generation_;
    index = slot->index;
  }
  auto spawned = WorkerProcess::Spawn(options_.command, index);
  absl::Status status = spawned.status();
  if (status.ok()) {
    WorkerProcess& process = **spawned;
    status = co_await AwaitWorkerStartup(process, control_, options_.startup_timeout);
    if (!status.ok() && !absl::IsDeadlineExceeded(status)) {
      status = absl::UnavailableError(
          absl::StrCat(status.message(), "; the worker ", process.ReapAfterFailure()));
    }
  }

  std::unique_ptr<WorkerProcess> doomed;
  {
    absl::MutexLock lock(&mu_);
    if (status.ok() && !shutting_down_) {
      slot->process = std::move(*spawned);
      slot->generation = generation;
      slot->calls = 0;
      slot->state = State::kIdle;
      idle_.push_back(slot);
      LogInfo("worker ", index, " started (pid ", slot->process->pid(), ")");
      metrics::WorkerStarted();
      cv_.Signal();
    } else if (!status.ok()) {
      if (spawned.ok()) doomed = std::move(*spawned);
      ++slot->consecutive_failures;
      absl::Duration delay = RestartBackoff(options_, slot->consecutive_failures);
      LogError("worker ", index, " failed to start: ", status.message(), "; retrying in ",
               absl::FormatDuration(delay));
      MarkDown(slot, delay, std::string(status.message()));
      cv_.SignalAll();  // callers waiting may now fail fast
    } else {
      doomed = std::move(*spawned);
      slot->state = State::kStopped;
    }
  }
  doomed.reset();
  Kick();
}

absl::StatusOr<WorkerPool::Slot*> WorkerPool::Acquire(absl::Time deadline, bool wait) {
  absl::MutexLock lock(&mu_);
  for (;;) {
    if (shutting_down_) return absl::UnavailableError("the server is shutting down");
    if (!idle_.empty()) {
      Slot* slot = idle_.back();
      idle_.pop_back();
      slot->state = State::kBusy;
      return slot;
    }
    if (!wait) return absl::UnavailableError("no idle worker");
    // Fail fast rather than wait out the deadline when no worker can come up.
    bool any_alive = std::any_of(slots_.begin(), slots_.end(), [](const auto& s) {
      return s->state == State::kBusy || s->state == State::kStarting ||
             (s->state == State::kDown && s->consecutive_failures < 3);
    });
    if (!any_alive) {
      return absl::UnavailableError(absl::StrCat(
          "no worker is running: the last start failed (", slots_.front()->last_failure,
          "); the server keeps retrying, see its log"));
    }
    if (waiting_ >= options_.max_queue) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "all ", options_.workers, " workers are busy and ", waiting_,
          " calls are already queued; retry later or run more workers (--workers)"));
    }
    ++waiting_;
    metrics::QueueDepth().Add(1);
    const absl::Time queued = absl::Now();
    bool timed_out;
    {
      LongWait long_wait;
      timed_out = cv_.WaitWithDeadline(&mu_, deadline);
    }
    --waiting_;
    metrics::QueueDepth().Add(-1);
    metrics::QueueWaited(absl::Now() - queued);
    if (timed_out && idle_.empty()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the deadline passed while waiting for one of the ", options_.workers,
          " busy workers; retry later or run more workers (--workers)"));
    }
  }
}

void WorkerPool::Release(Slot* slot, const Reply* reply, const absl::Status& failure) {
  std::unique_ptr<WorkerProcess> doomed;
  bool went_down = false;
  {
    absl::MutexLock lock(&mu_);
    if (!failure.ok()) {
      bool crashed = !absl::IsDeadlineExceeded(failure);
      if (crashed) ++slot->consecutive_failures;
      metrics::WorkerExited(crashed ? "crash" : "deadline");
      doomed = std::move(slot->process);
      MarkDown(slot, crashed ? RestartBackoff(options_, slot->consecutive_failures) : absl::ZeroDuration(),
               std::string(failure.message()));
      went_down = true;
    } else {
      ++slot->calls;
      slot->consecutive_failures = 0;
      const char* why = nullptr;
      const char* cause = nullptr;  // for cnp_worker_exits_total
      if (shutting_down_) why = "the server is shutting down";
      else if (reply != nullptr && reply->recycle()) why = "it ran out of memory", cause = "memory";
      else if (options_.max_calls_per_worker > 0 && slot->calls >= options_.max_calls_per_worker)
        why = "it reached --max-calls-per-worker", cause = "recycle";
      else if (slot->generation < generation_) why = "of a reload", cause = "reload";
      if (cause != nullptr) metrics::WorkerExited(cause);
      if (why != nullptr) {
        LogInfo("replacing worker ", slot->index, " (pid ", slot->process->pid(), ") because ", why);
        doomed = std::move(slot->process);
        MarkDown(slot, absl::ZeroDuration(), why);
        went_down = true;
      } else {
        slot->state = State::kIdle;
        idle_.push_back(slot);
        cv_.Signal();
      }
    }
  }
  doomed.reset();
  if (went_down) Kick();
}

absl::StatusOr<Reply> WorkerPool::ExchangeOn(Slot* slot, const Task& task, absl::Time deadline) {
  absl::StatusOr<Reply> reply = slot->process->Exchange(task, deadline);
  if (reply.ok()) return reply;
  return Explain(slot, task, reply.status());
}

absl::Status WorkerPool::Explain(Slot* slot, const Task& task, const absl::Status& failure) {
  WorkerProcess& process = *slot->process;
  if (absl::IsDeadlineExceeded(failure)) {
    LogWarning("worker ", slot->index, " (pid ", process.pid(), ") did not finish ",
               DescribeTask(task), " before the deadline: killing and replacing it");
    return absl::DeadlineExceededError(absl::StrCat(
        DescribeTask(task), " did not finish before the deadline; its worker was killed and "
        "is being replaced"));
  }
  std::string how = process.ReapAfterFailure();
  if (ShuttingDown()) {
    return absl::UnavailableError(absl::StrCat("the server shut down before ", DescribeTask(task),
                                               " finished; retry on another server"));
  }
  LogError("worker ", slot->index, " (pid ", process.pid(), ") ", how, " while running ",
           DescribeTask(task), " (", failure.message(), "); replacing it");
  return absl::UnavailableError(absl::StrCat("the worker running ", DescribeTask(task), " ",
                                             how, "; it is being replaced"));
}

absl::StatusOr<Reply> WorkerPool::Run(const Task& task, absl::Time deadline) {
  absl::StatusOr<Slot*> slot = Acquire(deadline, /*wait=*/true);
  if (!slot.ok()) return slot.status();
  absl::StatusOr<Reply> reply = ExchangeOn(*slot, task, deadline);
  Release(*slot, reply.ok() ? &*reply : nullptr, reply.status());
  return reply;
}

std::vector<absl::StatusOr<Reply>> WorkerPool::RunAll(const std::vector<Task>& tasks,
                                                      absl::Time deadline) {
  std::vector<absl::StatusOr<Reply>> results(tasks.size(), absl::InternalError(kNotRun));
  if (tasks.size() <= 1) {
    if (tasks.size() == 1) results[0] = Run(tasks[0], deadline);
    return results;
  }
  absl::StatusOr<Slot*> first = Acquire(deadline, /*wait=*/true);
  if (!first.ok()) {
    for (auto& r : results) r = first.status();
    return results;
  }
  std::vector<Slot*> slots{*first};
  while (slots.size() < tasks.size()) {
    absl::StatusOr<Slot*> more = Acquire(deadline, /*wait=*/false);
    if (!more.ok()) break;
    slots.push_back(*more);
  }

  // Feed the acquired workers from this thread: each gets the next task as soon as it answers.
  struct InFlight {
    Slot* slot;
    size_t task;
  };
  std::vector<InFlight> in_flight;
  size_t next = 0;
  // Gives `slot` the next task, or back to the pool when none is left.
  auto feed = [&](Slot* slot, const Reply* last) {
    if (next == tasks.size()) {
      Release(slot, last, absl::OkStatus());
      return;
    }
    size_t i = next++;
    if (absl::Status s = slot->process->Send(tasks[i], deadline); !s.ok()) {
      results[i] = Explain(slot, tasks[i], s);
      Release(slot, nullptr, results[i].status());
      return;
    }
    in_flight.push_back({slot, i});
  };
  for (Slot* slot : slots) feed(slot, nullptr);

  std::vector<pollfd> fds;
  std::optional<LongWait> long_wait;
  while (!in_flight.empty()) {
    fds.clear();
    for (const InFlight& f : in_flight) fds.push_back({f.slot->process->fd(), POLLIN, 0});
    int timeout_ms = -1;
    if (deadline != absl::InfiniteFuture()) {
      absl::Duration left = absl::Ceil(deadline - absl::Now(), absl::Milliseconds(1));
      timeout_ms = static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(left)));
    }
    if (!long_wait.has_value() && timeout_ms != 0) {
      // Answers usually come within microseconds; after a millisecond this is a long wait.
      if (::poll(fds.data(), fds.size(), 1) == 0) {
        long_wait.emplace();
        continue;
      }
    }
    int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      for (const InFlight& f : in_flight) {
        results[f.task] = Explain(f.slot, tasks[f.task], absl::DeadlineExceededError("poll"));
        Release(f.slot, nullptr, results[f.task].status());
      }
      break;
    }
    std::vector<InFlight> answered;
    std::vector<InFlight> waiting;
    for (size_t k = 0; k < in_flight.size(); ++k) {
      (fds[k].revents != 0 ? answered : waiting).push_back(in_flight[k]);
    }
    in_flight = std::move(waiting);
    for (const InFlight& f : answered) {
      absl::StatusOr<Reply> reply = f.slot->process->Receive(deadline);
      if (!reply.ok()) {
        results[f.task] = Explain(f.slot, tasks[f.task], reply.status());
        Release(f.slot, nullptr, results[f.task].status());
        continue;
      }
      results[f.task] = std::move(reply);
      feed(f.slot, &*results[f.task]);
    }
  }
  // Tasks never sent because workers failed: run them one by one on whichever worker is free.
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (!results[i].ok() && results[i].status().message() == kNotRun) {
      results[i] = Run(tasks[i], deadline);
    }
  }
  return results;
}

absl::StatusOr<std::unique_ptr<WorkerLease>> WorkerPool::Lease(absl::Time deadline) {
  absl::StatusOr<Slot*> slot = Acquire(deadline, /*wait=*/true);
  if (!slot.ok()) return slot.status();
  return std::make_unique<LeaseImpl>(*this, *slot);
}

void WorkerPool::ReloadAll() {
  absl::MutexLock lock(&mu_);
  // A reload asked for while one runs is merged into one more that starts when it has ended
  // and no request came for kReloadQuiet: the code may have changed again since the running
  // one began, but a storm of SIGHUPs must not restart the workers once per signal.
  last_reload_request_ = absl::Now();
  if (ReloadRunning() || reload_pending_) {
    if (!reload_pending_) LogInfo("a reload is running: one more will follow it");
    reload_pending_ = true;
    return;
  }
  ++generation_;
  reload_announced_ = false;
  LogInfo("reloading every worker, one at a time");
  Kick();
}

bool WorkerPool::ReloadRunning() const {
  return std::any_of(slots_.begin(), slots_.end(), [this](const auto& slot) {
    return slot->state != State::kStopped && slot->generation < generation_;
  });
}

void WorkerPool::Shutdown() {
  std::vector<std::unique_ptr<WorkerProcess>> doomed;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return;
    shutting_down_ = true;
    for (Slot* slot : idle_) {
      doomed.push_back(std::move(slot->process));
      slot->state = State::kStopped;
    }
    idle_.clear();
    // A busy worker's caller is waiting for its answer: killing the process makes that
    // exchange fail at once (and the caller then destroys and reaps it), so that no shutdown
    // waits for a function that takes its time.
    for (auto& slot : slots_) {
      if (slot->state == State::kBusy && slot->process != nullptr) {
        ::kill(slot->process->pid(), SIGKILL);
      }
    }
    cv_.SignalAll();
  }
  doomed.clear();
  Kick();
}

}  // namespace cnp::pool
