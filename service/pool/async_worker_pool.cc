#include "service/pool/async_worker_pool.h"

#include <algorithm>
#include <exception>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/dispatch.hpp"
#include "asio/post.hpp"
#include "asio/redirect_error.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"
#include "common/call_limit.h"
#include "service/common/log.h"
#include "common/retry_advice.h"
#include "service/metrics/service_metrics.h"
#include "service/pool/await_on.h"
#include "service/pool/memory_cap.h"
#include "service/pool/recycling_policy.h"
#include "service/pool/task_description.h"

namespace cnp::pool {
namespace {

// How long a worker whose socket closed mid-exchange is given to finish dying, so that the
// log can say how it ended (a segfault, an exit status) before it is killed.
constexpr absl::Duration kDeathGrace = absl::Milliseconds(200);

// A task that sets no answer limit gets the pool's.
void BoundAnswer(Task& task, int64_t max_answer_bytes) {
  if (task.max_answer_bytes() == 0 && max_answer_bytes > 0) {
    task.set_max_answer_bytes(max_answer_bytes);
  }
}

bool Cancelled(asio::cancellation_state state) {
  return state.cancelled() != asio::cancellation_type::none;
}

// Whether a cancel that comes at `now` is the deadline's: a client cancels at its deadline,
// which comes before the server's copy of it by the time the request took to arrive
// (kDeadlineCancelSlack). One rule for the pool's answer, its log line and the worker's exit
// cause, as for the call's count in the metrics (rpc_server.cc).
bool NearDeadline(absl::Time deadline, absl::Time now) {
  return deadline != absl::InfiniteFuture() && now >= deadline - kDeadlineCancelSlack;
}

// Why a task was not sent, if it was not: its deadline had passed or its caller had been
// cancelled before it could start. The worker is then as good as it was.
std::optional<absl::Status> NotStarted(const Task& task, bool cancelled, absl::Time deadline,
                                       absl::Time now) {
  if (deadline <= now || (cancelled && NearDeadline(deadline, now))) {
    return absl::DeadlineExceededError(
        absl::StrCat("the deadline passed before ", DescribeTask(task), " could start"));
  }
  if (cancelled) return absl::CancelledError(absl::StrCat(DescribeTask(task), " was cancelled"));
  return std::nullopt;
}

// How long a task had run when its deadline passed, and what the deadline counts from: a
// task that waited for a worker had less than the whole deadline to run.
std::string DeadlineRunText(absl::Duration ran) {
  return absl::StrFormat(
      "it ran %.2f s; the deadline counts from the call's arrival, its wait for a worker "
      "included",
      absl::ToDoubleSeconds(ran));
}

// Kills an exchange's worker when its deadline passes, unless the exchange ended first; a
// deadline the task's log() lines moved (RestartedDeadline) is waited for anew.
struct DeadlineWatch : std::enable_shared_from_this<DeadlineWatch> {
  DeadlineWatch(asio::io_context& context, std::weak_ptr<Worker> target,
                const RestartedDeadline* restarts, absl::Time deadline)
      : timer(context), target(std::move(target)), restarts(restarts), deadline(deadline) {}

  void Arm() {
    timer.expires_after(
        absl::ToChronoNanoseconds(std::max(deadline - absl::Now(), absl::ZeroDuration())));
    timer.async_wait([self = shared_from_this()](const asio::error_code& ec) {
      if (ec || self->done) return;  // (`restarts` may be gone once `done`)
      if (self->restarts != nullptr && self->restarts->deadline() > self->deadline) {
        self->deadline = self->restarts->deadline();
        self->Arm();
        return;
      }
      self->fired = true;
      if (std::shared_ptr<Worker> worker = self->target.lock()) worker->Kill();
    });
  }

  asio::steady_timer timer;
  const std::weak_ptr<Worker> target;
  const RestartedDeadline* const restarts;  // null: the deadline does not move
  absl::Time deadline;
  bool done = false;
  bool fired = false;
};

// Kills a worker taken out of the pool and waits for its end, so it is reaped, not left a
// zombie; nobody waits for this.
asio::awaitable<void> KillAndReap(std::shared_ptr<Worker> worker) {
  worker->Kill();
  co_await worker->Ended();
}

}  // namespace

// A worker held by one caller. Created on the pool's context; used from the caller's. The
// worker's Slot is not touched from the caller's thread: the lease keeps its own reference to
// the worker, and counts its calls until it gives the worker back.
class AsyncWorkerPool::LeaseImpl final : public AsyncWorkerLease {
 public:
  LeaseImpl(AsyncWorkerPool& pool, Slot* slot)
      : pool_(pool), slot_(slot), worker_(slot->worker),
        calls_left_(pool.options_.max_calls_per_worker > 0
                        ? pool.options_.max_calls_per_worker - slot->calls
                        : -1) {}
  ~LeaseImpl() override {
    // The lease's reference to the worker is let go on the pool's context too: the last one
    // destroys the worker, whose sockets belong to that context.
    if (worker_lost_) {  // it was already replaced
      asio::post(pool_.context_, [worker = std::move(worker_)] {});
      return;
    }
    AsyncWorkerPool* pool = &pool_;
    Slot* slot = slot_;
    const ReplacementAsked asked = replacement_asked_;
    const int64_t calls = calls_;
    asio::post(pool_.context_, [pool, slot, asked, calls, worker = std::move(worker_)] {
      pool->FinishCall(slot, asked, calls);
    });
  }

  asio::awaitable<absl::StatusOr<Reply>> Exchange(Task task, absl::Time deadline) override {
    co_return co_await ExchangeWith(std::move(task), deadline, nullptr);
  }
  asio::awaitable<absl::StatusOr<Reply>> ExchangeForwardingLogs(Task task, absl::Time deadline,
                                                                TaskLogListener& logs) override {
    co_return co_await ExchangeWith(std::move(task), deadline, &logs);
  }

  bool EndedBeforeTask() const override { return ended_before_task_; }
  // (CountCall's --max-calls-per-worker test, from the holder's side: it may not read the Slot.)
  bool ShouldGiveBack() const override {
    return replacement_asked_ != ReplacementAsked::kNo ||
           (calls_left_ >= 0 && calls_ >= calls_left_);
  }

 private:
  asio::awaitable<absl::StatusOr<Reply>> ExchangeWith(Task task, absl::Time deadline,
                                                      TaskLogListener* logs) {
    // A cancelled caller gets CANCELLED as a status, whatever its coroutine's setting.
    co_await asio::this_coro::throw_if_cancelled(false);
    if (!failure_.ok()) co_return failure_;
    BoundAnswer(task, pool_.options_.max_answer_bytes);
    const absl::Time start = absl::Now();
    absl::StatusOr<Reply> reply;
    {
      const LogForwarding forwarding(*worker_, task, logs, deadline);
      absl::StatusOr<Reply> exchanged =
          co_await ExchangeHere(std::move(task), deadline, start, forwarding.restarts());
      reply = std::move(exchanged);
    }
    if (!reply.ok()) {
      failure_ = reply.status();
      co_return reply;
    }
    ++calls_;
    // The worker asked to be replaced: it is, once the lease gives it back.
    if (const ReplacementAsked asked = ReplacementAskedBy(*reply); asked != ReplacementAsked::kNo) {
      replacement_asked_ = asked;
    }
    co_return reply;
  }

  // (Every co_await here is a statement of its own, with no temporary beside it but the
  // awaitables - no Status, no std::function: GCC 12 miscompiles both.)
  asio::awaitable<absl::StatusOr<Reply>> ExchangeHere(Task task, absl::Time deadline,
                                                      absl::Time start,
                                                      const RestartedDeadline* restarts) {
    using Outcome = QuickExchange::Outcome;
    const asio::cancellation_state cancellation = co_await asio::this_coro::cancellation_state;
    if (std::optional<absl::Status> not_started =
            NotStarted(task, Cancelled(cancellation), deadline, start)) {
      co_return *std::move(not_started);
    }
    // Even when the last reply was too slow to wait for, the quick exchange sends the task (and
    // finds a worker that died while kept idle before it does); it then waits for nothing.
    const absl::Duration wait =
        wait_for_reply_ ? std::min(kQuickWait, deadline - start) : absl::ZeroDuration();
    QuickExchange quick = worker_->TryQuickExchange(task, wait);
    if (quick.outcome == Outcome::kDone &&
        (quick.reply.ok() || TaskWasNotSent(quick.reply.status()))) {
      co_return std::move(quick.reply);
    }
    absl::StatusOr<Reply> reply = absl::UnknownError("no exchange");
    if (quick.outcome == Outcome::kDone || quick.outcome == Outcome::kEndedBefore) {
      // The worker failed, or had died while kept idle: replaced on the pool's context.
      ended_before_task_ = quick.outcome == Outcome::kEndedBefore;
      absl::Status failure = quick.reply.status();
      reply = co_await AwaitOn(pool_.executor(),
                               pool_.LeaseFailedHere(slot_, std::move(task), std::move(failure),
                                                     ended_before_task_, &worker_lost_));
    } else if (quick.outcome == Outcome::kPending) {
      // Not answered within the wait (or none was waited for): finished on the pool's
      // context. The next exchange waits only if this one, all told, took less than the wait.
      reply = co_await AwaitOn(pool_.executor(),
                               pool_.LeaseExchangeHere(slot_, std::move(task), deadline,
                                                       /*sent=*/true, start, &worker_lost_,
                                                       restarts));
      wait_for_reply_ = absl::Now() - start < kQuickWait;
    } else {
      reply = co_await AwaitOn(pool_.executor(),
                               pool_.LeaseExchangeHere(slot_, std::move(task), deadline,
                                                       /*sent=*/false, start, &worker_lost_,
                                                       restarts));
    }
    co_return reply;
  }

  AsyncWorkerPool& pool_;
  Slot* const slot_;
  std::shared_ptr<Worker> worker_;
  // What --max-calls-per-worker leaves this worker, or -1 for no limit.
  const int64_t calls_left_;
  // After a failed exchange the lease only reports that failure (its worker's state is unknown
  // or it is gone); `worker_lost_` says whether the worker was replaced (written on the pool's
  // context, read after the exchange returned).
  absl::Status failure_;
  bool worker_lost_ = false;
  bool ended_before_task_ = false;
  ReplacementAsked replacement_asked_ = ReplacementAsked::kNo;
  int64_t calls_ = 0;
  // Whether the next exchange waits (up to kQuickWait) on the caller's thread for its reply:
  // the last one not answered at once took less than kQuickWait all told.
  bool wait_for_reply_ = true;
};

AsyncWorkerPool::AsyncWorkerPool(PoolOptions options, std::unique_ptr<WorkerFactory> factory,
                                 asio::io_context& context)
    : options_(std::move(options)), factory_(std::move(factory)), context_(context),
      wake_(context) {
  for (int i = 0; i < options_.workers; ++i) {
    slots_.push_back(std::make_unique<Slot>(i, options_));
  }
}

AsyncWorkerPool::~AsyncWorkerPool() {
  // The context no longer runs: kill what is left here (a Worker reaps on destruction).
  shutting_down_ = true;
  for (auto& slot : slots_) {
    if (slot->worker != nullptr) slot->worker->Kill();
    slot->worker.reset();
  }
}

absl::Status AsyncWorkerPool::Start() {
  started_ = true;
  asio::co_spawn(context_, Maintain(), asio::detached);
  // Run the context here until every worker has either come up or failed once.
  for (;;) {
    bool settled = std::all_of(slots_.begin(), slots_.end(), [](const auto& s) {
      return s->state == State::kIdle || s->state == State::kBusy ||
             s->restarts.LastStartFailed();
    });
    if (settled) {
      if (!idle_.empty()) {
        up_ = true;
        return absl::OkStatus();
      }
      // Every worker is given the same settings: one that refused them says what to fix,
      // whatever became of the others (a crash of the first, say).
      for (const auto& slot : slots_) {
        if (slot->last_start_failure == absl::StatusCode::kInvalidArgument) {
          return absl::InvalidArgumentError(
              absl::StrCat("no worker could start: ", slot->last_failure));
        }
      }
      return absl::UnavailableError(absl::StrCat(
          "no worker could start: ", slots_.front()->last_failure,
          ". Check --worker-binary and --python-path; the worker's own message is above."));
    }
    context_.run_one();
  }
}

// ---- The awaitable interface: hop to the pool's context and back. ----

asio::awaitable<absl::StatusOr<Reply>> AsyncWorkerPool::Run(Task task, absl::Time deadline) {
  co_return co_await AwaitOn(executor(), RunHere(std::move(task), deadline));
}

asio::awaitable<std::vector<absl::StatusOr<Reply>>> AsyncWorkerPool::RunAll(
    std::vector<Task> tasks, absl::Time deadline) {
  co_return co_await AwaitOn(executor(), RunAllHere(std::move(tasks), deadline));
}

asio::awaitable<absl::StatusOr<std::unique_ptr<AsyncWorkerLease>>> AsyncWorkerPool::Lease(
    absl::Time deadline) {
  co_return co_await AwaitOn(executor(), LeaseHere(deadline));
}

asio::awaitable<AsyncTaskRunner::KeptRun> AsyncWorkerPool::RunAndKeep(
    Task task, absl::Time deadline, std::function<void()> wanted, TaskLogListener* logs) {
  co_return co_await AwaitOn(executor(),
                             RunAndKeepHere(std::move(task), deadline, std::move(wanted), logs));
}

// ---- On the pool's context. ----

asio::awaitable<absl::StatusOr<Reply>> AsyncWorkerPool::RunHere(Task task, absl::Time deadline) {
  // A cancelled call still has things to await (a worker's end); it must not throw instead.
  co_await asio::this_coro::throw_if_cancelled(false);
  BoundAnswer(task, options_.max_answer_bytes);
  absl::StatusOr<Slot*> slot = co_await Acquire(deadline);
  if (!slot.ok()) co_return slot.status();
  absl::StatusOr<Reply> reply = co_await ExchangeOn(*slot, task, deadline);
  if (reply.ok()) {
    FinishCall(*slot, ReplacementAskedBy(*reply));
  } else if (Held(*slot)) {
    MakeIdle(*slot);
  }
  co_return reply;
}

asio::awaitable<std::vector<absl::StatusOr<Reply>>> AsyncWorkerPool::RunAllHere(
    std::vector<Task> tasks, absl::Time deadline) {
  co_await asio::this_coro::throw_if_cancelled(false);
  if (tasks.size() <= 1) {
    std::vector<absl::StatusOr<Reply>> results;
    if (tasks.size() == 1) results.push_back(co_await RunHere(std::move(tasks[0]), deadline));
    co_return results;
  }
  for (Task& task : tasks) BoundAnswer(task, options_.max_answer_bytes);
  // Owned here until RunAll returns; after that, by the coroutine that waits for the feeders
  // still running (below).
  auto batch = std::make_unique<Batch>(std::move(tasks), deadline, context_);
  const size_t n = batch->tasks.size();
  absl::StatusOr<Slot*> first = co_await Acquire(deadline, batch.get());
  if (!first.ok()) {
    // No task's fault: none ran.
    for (auto& r : batch->results) r = NotRunInBatch(first.status());
    co_return std::move(batch->results);
  }
  std::vector<Slot*> held{*first};
  while (held.size() < n) {
    Slot* more = TryAcquire();
    if (more == nullptr) break;
    held.push_back(more);
  }
  // Workers that sessions keep between their lines are asked back, each for a feeder of its
  // own that waits for it (Feed acquires when it starts without one): a batch is not held to
  // fewer workers by a session that sends nothing.
  const size_t kept = std::count_if(slots_.begin(), slots_.end(),
                                    [](const auto& slot) { return slot->wanted != nullptr; });
  const size_t late = std::min(kept, n - held.size());

  // One feeder per worker, each taking the next task as soon as its worker answers. Each has
  // its own cancellation signal: cancelling the batch cancels them all.
  held.resize(held.size() + late, nullptr);
  batch->signals = std::make_unique<asio::cancellation_signal[]>(held.size());
  batch->feeding = static_cast<int>(held.size());
  for (size_t k = held.size() - late; k < held.size(); ++k) {
    batch->waiting.push_back(&batch->signals[k]);
  }
  Batch* const shared = batch.get();
  for (size_t k = 0; k < held.size(); ++k) {
    asio::co_spawn(context_, Feed(*shared, held[k], &shared->signals[k]),
                   asio::bind_cancellation_slot(shared->signals[k].slot(),
                                                [shared](std::exception_ptr) {
                                                  if (--shared->feeding == 0) shared->wake.cancel();
                                                }));
  }
  bool cancelled = false;
  while (batch->feeding > 0) {
    // A task failed (its worker crashed, the deadline passed...): the call fails whatever the
    // others answer, so it is answered now, not once they have. (A cancelled call waits for
    // its feeders, whose tasks end at once: their workers are killed.)
    if (!cancelled && !batch->stopped.ok()) break;
    asio::error_code ec;
    co_await batch->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    const asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
    if (!cancelled && Cancelled(state)) {
      cancelled = true;
      for (size_t k = 0; k < held.size(); ++k) {
        batch->signals[k].emit(asio::cancellation_type::terminal);
      }
    }
  }
  // Tasks no feeder took, and those whose answers are not waited for: the reason they have
  // none, marked as not theirs.
  const absl::Status none =
      batch->stopped.ok() ? absl::InternalError("the batch ended without running it")
                          : batch->stopped;
  std::vector<absl::StatusOr<Reply>> results;
  results.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (batch->answered[i]) {
      results.push_back(std::move(batch->results[i]));
    } else {
      results.push_back(NotRunInBatch(none));
    }
  }
  if (batch->feeding > 0) {
    // The feeders still running finish their tasks (a worker is not killed for another's
    // failure) and give their workers back; the batch goes with the last of them.
    asio::co_spawn(context_, OutliveFeeders(std::move(batch)), asio::detached);
  }
  co_return results;
}

asio::awaitable<void> AsyncWorkerPool::Feed(Batch& batch, Slot* slot,
                                            asio::cancellation_signal* signal) {
  co_await asio::this_coro::throw_if_cancelled(false);
  const size_t n = batch.tasks.size();
  // A feeder that starts without a worker waits for one a session gives back (RunAllHere);
  // its failure to get one stops nothing: the other feeders go on without it.
  bool late = slot == nullptr;
  while (batch.stopped.ok() && batch.next < n) {
    if (slot == nullptr) {
      absl::StatusOr<Slot*> acquired = co_await Acquire(
          batch.deadline, &batch, late ? Asker::kLateFeeder : Asker::kFeederAgain);
      std::erase(batch.waiting, signal);
      if (!acquired.ok()) {
        // Not needed any more (ReleaseWaiting), or the batch already stopped: nothing to say.
        if (late || !batch.stopped.ok() || batch.next == n) break;
        batch.Stop(acquired.status());
        break;
      }
      late = false;
      slot = *acquired;
      if (!batch.stopped.ok() || batch.next == n) break;
    }
    const size_t i = batch.next++;
    // The last task is taken: feeders waiting for a worker would only hold the batch up.
    if (batch.next == n) batch.ReleaseWaiting();
    absl::StatusOr<Reply> result = co_await ExchangeOn(slot, batch.tasks[i], batch.deadline);
    const bool ok = result.ok();
    const ReplacementAsked asked = ok ? ReplacementAskedBy(*result) : ReplacementAsked::kNo;
    if (!ok) {
      if (!Held(slot)) slot = nullptr;  // replaced by ExchangeOn
      // Any task that fails fails the call: the tasks left are not run, and RunAll answers
      // now.
      batch.Stop(result.status());
    }
    batch.results[i] = std::move(result);
    batch.answered[i] = true;
    if (ok && !CountCall(slot, asked)) slot = nullptr;
    if (slot != nullptr && batch.stopped.ok() && batch.next < n && admission_.AnyWaitingBesides(batch)) {
      // Another caller waits for a worker: it gets this one (not one of this batch's feeders
      // waiting before it), and this feeder queues behind it for the next, so that a caller
      // waits for one task of a batch, not for the batch. (After a task: a feeder that waited
      // its turn runs one before it gives the worker away.)
      MakeIdle(slot, &batch);
      slot = nullptr;
      batch.waiting.push_back(signal);
    }
  }
  if (slot != nullptr) MakeIdle(slot);
}

asio::awaitable<void> AsyncWorkerPool::OutliveFeeders(std::unique_ptr<Batch> batch) {
  while (batch->feeding > 0) {
    asio::error_code ec;
    co_await batch->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<absl::StatusOr<std::unique_ptr<AsyncWorkerLease>>> AsyncWorkerPool::LeaseHere(
    absl::Time deadline) {
  co_await asio::this_coro::throw_if_cancelled(false);
  absl::StatusOr<Slot*> slot = co_await Acquire(deadline);
  if (!slot.ok()) co_return slot.status();
  co_return std::make_unique<LeaseImpl>(*this, *slot);
}

asio::awaitable<absl::StatusOr<Reply>> AsyncWorkerPool::LeaseExchangeHere(
    Slot* slot, Task task, absl::Time deadline, bool sent, absl::Time began, bool* lost,
    const RestartedDeadline* restarts) {
  co_await asio::this_coro::throw_if_cancelled(false);
  absl::StatusOr<Reply> reply = co_await ExchangeOn(slot, task, deadline, sent, began, restarts);
  *lost = !Held(slot);
  co_return reply;
}

asio::awaitable<absl::StatusOr<Reply>> AsyncWorkerPool::LeaseFailedHere(Slot* slot, Task task,
                                                                        absl::Status failure,
                                                                        bool ended_before,
                                                                        bool* lost) {
  co_await asio::this_coro::throw_if_cancelled(false);
  *lost = true;
  if (!ended_before) co_return co_await ReplaceAfterFailure(slot, task, std::move(failure), false);
  // It died while held idle (the OOM killer, say): replaced as an idle worker that died is.
  const std::string how = co_await HowItEnded(*slot->worker, kDeathGrace);
  ReplaceEnded(slot, how, "while its caller held it idle");
  co_return absl::UnavailableError(absl::StrCat(
      "the worker held for this call ", how, " before ", DescribeTask(task),
      " was sent to it; it is being replaced"));
}

asio::awaitable<AsyncTaskRunner::KeptRun> AsyncWorkerPool::RunAndKeepHere(
    Task task, absl::Time deadline, std::function<void()> wanted, TaskLogListener* logs) {
  co_await asio::this_coro::throw_if_cancelled(false);
  BoundAnswer(task, options_.max_answer_bytes);
  absl::StatusOr<Slot*> slot = co_await Acquire(deadline);
  if (!slot.ok()) co_return KeptRun{slot.status(), nullptr};
  absl::StatusOr<Reply> reply;
  {
    // (Held here for this exchange: ExchangeOn's failure replaces the worker, whose slot then
    // holds another.)
    const std::shared_ptr<Worker> worker = (*slot)->worker;
    const LogForwarding forwarding(*worker, task, logs, deadline);
    absl::StatusOr<Reply> exchanged = co_await ExchangeOn(
        *slot, task, deadline, false, absl::InfinitePast(), forwarding.restarts());
    reply = std::move(exchanged);
  }
  if (!reply.ok()) {
    if (Held(*slot)) MakeIdle(*slot);
    co_return KeptRun{std::move(reply), nullptr};
  }
  if (!CountCall(*slot, ReplacementAskedBy(*reply))) co_return KeptRun{std::move(reply), nullptr};
  // Another caller's turn comes first; a worker a reload is about to replace is not kept; nor
  // is one when callers cannot wait (--max-queue=0): one refused could never get it.
  if (!admission_.empty() || reload_.Stale(**slot) || options_.max_queue == 0) {
    MakeIdle(*slot);
    co_return KeptRun{std::move(reply), nullptr};
  }
  (*slot)->wanted = std::move(wanted);
  co_return KeptRun{std::move(reply), std::make_unique<LeaseImpl>(*this, *slot)};
}

void AsyncWorkerPool::AskKeptWorkersBack(const std::function<bool(const Slot&)>& which) {
  for (auto& slot : slots_) {
    if (slot->wanted == nullptr || slot->asked_back || (which != nullptr && !which(*slot))) {
      continue;
    }
    slot->asked_back = true;
    slot->wanted();
  }
}

AsyncWorkerPool::Slot* AsyncWorkerPool::TryAcquire() {
  while (!shutting_down_ && !idle_.empty()) {
    Slot* slot = idle_.back();
    idle_.pop_back();
    // Dead before the pool heard of it: its task would meet a closed socket and be answered
    // as if it had crashed the worker. Replaced as a worker that died idle is; the caller
    // takes the next one, or waits for the replacement.
    if (slot->worker->EndedWhileIdle()) {
      ReplaceEnded(slot, "closed its socket (or wrote to it unprompted)", "while idle");
      continue;
    }
    slot->state = State::kBusy;
    return slot;
  }
  return nullptr;
}

asio::awaitable<absl::StatusOr<AsyncWorkerPool::Slot*>> AsyncWorkerPool::Acquire(
    absl::Time deadline, const Batch* batch, Asker asker) {
  const absl::Status too_late = absl::DeadlineExceededError(absl::StrCat(
      "the deadline passed while waiting for one of the ", options_.workers,
      " busy workers; retry later or run more workers (--workers)"));
  if (Cancelled(co_await asio::this_coro::cancellation_state)) {
    if (NearDeadline(deadline, absl::Now())) co_return too_late;
    co_return absl::CancelledError("the call was cancelled before it was given a worker");
  }
  if (shutting_down_) {
    co_return ServerStopping(absl::UnavailableError("the server is shutting down"));
  }
  if (Slot* slot = TryAcquire()) co_return slot;
  // Workers kept by sessions between their lines come back, for this caller or the next.
  AskKeptWorkersBack();
  // Fail fast rather than wait out the deadline when no worker can come up.
  if (!AnyCanServe()) co_return NoWorkerRunning();
  if (asker != Asker::kFeederAgain && admission_.full()) {
    co_return absl::ResourceExhaustedError(absl::StrCat(
        "all ", options_.workers, " workers are busy and ", admission_.callers(),
        " calls are already queued; retry later or run more workers (--workers)"));
  }
  if (deadline <= absl::Now()) co_return too_late;

  AdmissionQueue::Turn turn =
      co_await admission_.Wait(deadline, batch, /*feeder=*/asker != Asker::kCaller);
  const bool cancelled = Cancelled(co_await asio::this_coro::cancellation_state);
  if (turn.slot != nullptr) {
    if (!cancelled) co_return turn.slot;
    MakeIdle(turn.slot);  // handed over just as the caller went away: the next one takes it
  }
  if (cancelled) {
    if (NearDeadline(deadline, absl::Now())) co_return too_late;
    co_return absl::CancelledError("the call was cancelled while waiting for a worker");
  }
  if (!turn.failure.ok()) co_return turn.failure;
  co_return too_late;
}

asio::awaitable<absl::StatusOr<Reply>> AsyncWorkerPool::ExchangeOn(
    Slot* slot, const Task& task, absl::Time deadline, bool sent, absl::Time began,
    const RestartedDeadline* restarts) {
  Worker& worker = *slot->worker;
  const absl::Time now = absl::Now();
  // When the task went to the worker (a quick exchange sent it before this), for the run time
  // a deadline's message gives.
  if (began == absl::InfinitePast()) began = now;
  const bool cancelled = Cancelled(co_await asio::this_coro::cancellation_state);
  if (sent && cancelled) {
    // Cancelled between the quick wait and here: the task is in the worker's hands.
    absl::Status failure = absl::CancelledError("the exchange was cancelled");
    co_return co_await ReplaceAfterFailure(slot, task, std::move(failure),
                                           NearDeadline(deadline, now), now - began);
  }
  if (!sent) {
    // Not sent: the worker is still the caller's.
    if (std::optional<absl::Status> not_started = NotStarted(task, cancelled, deadline, now)) {
      co_return *std::move(not_started);
    }
  }

  absl::StatusOr<Reply> reply;
  bool timed_out = false;
  if (deadline == absl::InfiniteFuture()) {
    // (Not a conditional expression around the co_awaits: GCC 12 miscompiles those.)
    if (sent) {
      reply = co_await worker.FinishExchange();
    } else {
      reply = co_await worker.Exchange(task);
    }
  } else {
    // The deadline kills the worker, which ends the exchange: one timer with a plain handler,
    // no second coroutine racing the exchange. The watch outlives this frame if its handler has
    // not run yet; `done` keeps a late expiry from killing a worker that answered in time.
    auto watch = std::make_shared<DeadlineWatch>(context_, slot->worker, restarts, deadline);
    watch->Arm();
    if (sent) {
      reply = co_await worker.FinishExchange();
    } else {
      reply = co_await worker.Exchange(task);
    }
    watch->done = true;
    watch->timer.cancel();
    timed_out = watch->fired;
  }
  if (reply.ok() && !timed_out) co_return reply;
  // Refused before a byte was written (too large, cannot be serialized): the worker is as it
  // was and still the caller's, the error the caller's own.
  if (!timed_out && !sent && TaskWasNotSent(reply.status())) co_return reply;
  absl::Status failure = reply.status();
  const absl::Time ended = absl::Now();
  // The client's cancel at its deadline is the deadline, as the server's own timer is.
  if (restarts != nullptr) deadline = restarts->deadline();
  if (absl::IsCancelled(failure) && NearDeadline(deadline, ended)) timed_out = true;
  co_return co_await ReplaceAfterFailure(slot, task, std::move(failure), timed_out,
                                         ended - began);
}

asio::awaitable<absl::Status> AsyncWorkerPool::ReplaceAfterFailure(Slot* slot, const Task& task,
                                                                   absl::Status failure,
                                                                   bool timed_out,
                                                                   absl::Duration ran) {
  // The worker's state is unknown from here: it is killed and replaced. (Cleared before the
  // wait below, so that the pool does not ask a worker being replaced back; Retire clears
  // them too.)
  slot->wanted = nullptr;
  slot->asked_back = false;
  Worker& worker = *slot->worker;
  const pid_t pid = worker.pid();
  // Fields for a collector: which function, which worker, why it went (the cause
  // cnp_worker_exits_total counts). The call's RPC and peer are not known here, on the pool's
  // thread (the pool serves every call): the call's own line (calls/function_calls.cc, on its
  // coroutine) has them, with the function and the status it was answered.
  const std::string function = TaskFunctions(task);
  const std::string worker_pid = absl::StrCat(pid);
  if (timed_out) {
    // The deadline counts from the call's arrival: a task that waited long for a worker may
    // have run briefly, and a healthy worker is killed. Both say how long it ran.
    LogEvent(LogLevel::kWarning,
             absl::StrCat("worker ", slot->index, " (pid ", pid, ") did not finish ",
                          DescribeTask(task), " before the deadline (", DeadlineRunText(ran),
                          "): killing and replacing it"),
             {{"function", function}, {"worker_pid", worker_pid, true}, {"cause", "deadline"}});
    metrics::WorkerExited("deadline");
    Retire(slot, absl::ZeroDuration(), "it missed a deadline");
    co_return absl::DeadlineExceededError(absl::StrCat(
        DescribeTask(task), " did not finish before the deadline (", DeadlineRunText(ran),
        "); its worker was killed and is being replaced"));
  }
  if (absl::IsOutOfRange(failure)) {
    // Its reply was refused from its length, unread; what is left of it is in the socket, so
    // the worker cannot take another task. (Our worker answers ANSWER_TOO_LARGE itself rather
    // than send such a reply: this one is broken or of another build.)
    LogEvent(LogLevel::kWarning,
             absl::StrCat("worker ", slot->index, " (pid ", pid, ") answered ",
                          DescribeTask(task), " with more than the task allows (",
                          failure.message(), "): killing and replacing it"),
             {{"function", function}, {"worker_pid", worker_pid, true}, {"cause", "oversized"}});
    metrics::WorkerExited("oversized");
    Retire(slot, absl::ZeroDuration(), "its answer was too large");
    co_return WithCallLimit(
        NotRetryable(absl::ResourceExhaustedError(absl::StrCat(
            "the answer to ", DescribeTask(task), " would be larger than the ",
            task.max_answer_bytes(), " bytes left for it of what a call may carry; split the "
            "batch, or raise cnp-server's --max-call-bytes"))),
        {CallLimit::Kind::kAnswer, task.max_answer_bytes()});
  }
  if (absl::IsCancelled(failure)) {
    LogEvent(LogLevel::kInfo,
             absl::StrCat("worker ", slot->index, " (pid ", pid, ") was running ",
                          DescribeTask(task),
                          " for a call that was cancelled: killing and replacing it"),
             {{"function", function}, {"worker_pid", worker_pid, true}, {"cause", "cancel"}});
    metrics::WorkerExited("cancel");
    Retire(slot, absl::ZeroDuration(), "its call was cancelled");
    co_return absl::CancelledError(absl::StrCat(
        DescribeTask(task), " was cancelled; its worker was killed and is being replaced"));
  }
  const std::string how = co_await HowItEnded(worker, kDeathGrace);
  if (shutting_down_) {
    Retire(slot, absl::ZeroDuration(), "the server is shutting down");
    co_return ServerStopping(absl::UnavailableError(absl::StrCat(
        "the server shut down before ", DescribeTask(task), " finished; retry on another "
        "server")));
  }
  // Which functions a crash-looping deployment should look at (the fields above).
  LogEvent(LogLevel::kError,
           absl::StrCat("worker ", slot->index, " (pid ", pid, ") ", how, " while running ",
                        DescribeTask(task), " (", failure.message(), "); replacing it"),
           {{"function", function}, {"worker_pid", worker_pid, true}, {"cause", "crash"}});
  metrics::WorkerExited("crash");
  Retire(slot, slot->restarts.CrashedByTask(absl::Now()), std::string(failure.message()));
  // The request itself may be what crashes workers: clients must not send it again elsewhere.
  // A reply that broke the protocol (one answering another task, say) is named: the worker
  // may not have crashed at all.
  const std::string fault =
      absl::IsDataLoss(failure) ? absl::StrCat(" after a fault (", failure.message(), ")") : "";
  co_return NotRetryable(absl::UnavailableError(absl::StrCat(
      "the worker running ", DescribeTask(task), " ", how, fault, "; it is being replaced")));
}

bool AsyncWorkerPool::CountCall(Slot* slot, ReplacementAsked asked, int64_t calls) {
  slot->calls += calls;
  // A lease given back unused says nothing of the worker's health: a crash loop's backoff
  // keeps growing.
  if (calls > 0) slot->restarts.CallEnded();
  const std::optional<Recycling> recycling =
      RecycleAfterCalls(options_, {.calls = slot->calls,
                                   .asked = asked,
                                   .over_memory_cap = slot->over_memory_cap,
                                   .stale = reload_.Stale(*slot),
                                   .shutting_down = shutting_down_,
                                   .another_being_replaced = Replacing()});
  if (!recycling.has_value()) return true;
  if (recycling->cause != nullptr) metrics::WorkerExited(recycling->cause);
  LogInfo("replacing worker ", slot->index, " (pid ", slot->worker->pid(), ") because ",
          recycling->why);
  Retire(slot, absl::ZeroDuration(), recycling->why);
  return false;
}

void AsyncWorkerPool::FinishCall(Slot* slot, ReplacementAsked asked, int64_t calls) {
  if (CountCall(slot, asked, calls)) MakeIdle(slot);
}

void AsyncWorkerPool::MakeIdle(Slot* slot, const Batch* passed_by) {
  slot->wanted = nullptr;
  slot->asked_back = false;
  if (slot->ended_while_held.has_value()) {
    ReplaceEnded(slot, *slot->ended_while_held, "while a caller held it");
    return;
  }
  if (shutting_down_) {
    Retire(slot, absl::ZeroDuration(), "the server is shutting down");
    return;
  }
  // Dead just after it answered, its end not yet reported: handed on, it would meet the next
  // caller's task with a closed socket, which would be blamed for the crash (as TryAcquire).
  if (slot->worker->EndedWhileIdle()) {
    ReplaceEnded(slot, "closed its socket (or wrote to it unprompted)", "as it was handed on");
    return;
  }
  if (admission_.HandOver(slot, passed_by)) {
    slot->state = State::kBusy;
    return;
  }
  slot->state = State::kIdle;
  idle_.push_back(slot);
}

void AsyncWorkerPool::Retire(Slot* slot, absl::Duration restart_delay, std::string why) {
  slot->wanted = nullptr;
  slot->asked_back = false;
  slot->ended_while_held.reset();
  slot->over_memory_cap = false;
  if (slot->worker != nullptr) {
    asio::co_spawn(context_, KillAndReap(std::move(slot->worker)), asio::detached);
  }
  slot->state = shutting_down_ ? State::kStopped : State::kDown;
  slot->restart_at = absl::Now() + restart_delay;
  slot->last_failure = std::move(why);
  Kick();
}

bool AsyncWorkerPool::Replacing() const {
  return std::any_of(slots_.begin(), slots_.end(), [](const auto& s) {
    return s->state == State::kStarting || s->state == State::kDown;
  });
}

bool AsyncWorkerPool::AnyCanServe() const {
  return std::any_of(slots_.begin(), slots_.end(), [](const auto& s) {
    return s->state == State::kBusy || s->state == State::kIdle ||
           s->state == State::kStarting ||
           (s->state == State::kDown && !s->restarts.GivenUp());
  });
}

absl::Status AsyncWorkerPool::NoWorkerRunning() const {
  return absl::UnavailableError(absl::StrCat(
      "no worker is running: the last start failed (", slots_.front()->last_failure,
      "); the server keeps retrying, see its log"));
}

void AsyncWorkerPool::Kick() { wake_.cancel(); }

asio::awaitable<void> AsyncWorkerPool::Maintain() {
  absl::Time next_memory_check = absl::Now();
  for (;;) {
    if (shutting_down_) co_return;
    const absl::Time now = absl::Now();
    absl::Time next_due = now + absl::Seconds(2);
    AdvanceReload(now, next_due);
    // Every slot taken down for a restart is started in the same round (a round that left one
    // out would leave it "starting" for good).
    bool changed = StartDueWorkers(now, next_due);
    if (options_.memory_cap_bytes > 0) {
      if (now >= next_memory_check) {
        next_memory_check = now + options_.memory_check_interval;
        // A slot retired here is due at once: the next round starts it.
        changed = ReplaceWorkersOverMemoryCap() || changed;
      }
      next_due = std::min(next_due, next_memory_check);
    }
    if (changed) continue;

    absl::Duration wait = std::max(next_due - absl::Now(), absl::ZeroDuration());
    wake_.expires_after(absl::ToChronoNanoseconds(wait));
    asio::error_code ec;
    co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

void AsyncWorkerPool::AdvanceReload(absl::Time now, absl::Time& next_due) {
  if (reload_.Running(slots_)) return;
  switch (reload_.WhenNoneRuns(now, next_due)) {
    case RollingReload::Progress::kFollowUpBegan:
      LogInfo("reloading every worker again, for the reloads asked for meanwhile");
      AskKeptWorkersBack();
      break;
    case RollingReload::Progress::kFinished:
      // Modules are imported at a worker's first call of them, not at its start: a module that
      // no longer imports (a SyntaxError) is reported by that call, not here.
      LogInfo("reload finished: every worker was restarted, and imports its modules anew at "
              "their first call");
      break;
    case RollingReload::Progress::kNothing:
      break;
  }
}

bool AsyncWorkerPool::StartDueWorkers(absl::Time now, absl::Time& next_due) {
  std::vector<Slot*> due;
  for (auto& slot : slots_) {
    if (slot->state != State::kDown) continue;
    if (slot->restart_at <= now) {
      due.push_back(slot.get());
    } else {
      next_due = std::min(next_due, slot->restart_at);
    }
  }
  // A reload replaces one stale idle worker at a time, so that the others keep serving: not
  // while a worker starts or a slot is down, waiting to retry a start that failed (a reload
  // whose workers cannot start, a broken Python, took every stale worker down, one per retry).
  if (!Replacing()) {
    if (Slot* slot = reload_.NextToReplace(idle_)) {
      idle_.erase(std::find(idle_.begin(), idle_.end(), slot));
      metrics::WorkerExited("reload");
      asio::co_spawn(context_, KillAndReap(std::move(slot->worker)), asio::detached);
      due.push_back(slot);
    }
  }
  for (Slot* slot : due) {
    slot->state = State::kStarting;
    asio::co_spawn(context_, StartWorker(slot), asio::detached);
  }
  return !due.empty();
}

bool AsyncWorkerPool::ReplaceWorkersOverMemoryCap() {
  // Idle workers over the cap are replaced now; one a session keeps is asked back and replaced
  // when it comes back (CountCall).
  std::vector<Slot*> over;
  for (auto& slot : slots_) {
    const bool idle = slot->state == State::kIdle;
    const bool kept = slot->wanted != nullptr && !slot->over_memory_cap;
    if ((!idle && !kept) || slot->worker == nullptr) continue;
    metrics::WorkerResident(slot->index, slot->worker->ResidentBytes());
    const int64_t mapped = slot->worker->AddressSpaceBytes();
    if (!IsNearMemoryCap(mapped, slot->worker->StartedAddressSpaceBytes(),
                         options_.memory_cap_bytes)) {
      continue;
    }
    LogWarning("worker ", slot->index, " (pid ", slot->worker->pid(), ") maps ", mapped >> 20,
               " MiB of its ", options_.memory_cap_bytes >> 20,
               " MiB cap, leaving less than the ", MemoryHeadroom(options_.memory_cap_bytes) >> 20,
               " MiB a call may need: replacing it", idle ? "" : " once its session gives it back");
    if (idle) {
      over.push_back(slot.get());
    } else {
      slot->over_memory_cap = true;
    }
  }
  AskKeptWorkersBack([](const Slot& slot) { return slot.over_memory_cap; });
  for (Slot* slot : over) {
    idle_.erase(std::find(idle_.begin(), idle_.end(), slot));
    metrics::WorkerExited("memory");
    Retire(slot, absl::ZeroDuration(), "over its memory cap");
  }
  return !over.empty();
}

asio::awaitable<void> AsyncWorkerPool::StartWorker(Slot* slot) {
  const uint64_t generation = reload_.generation();
  slot->restarts.StartBegan(absl::Now());
  absl::StatusOr<std::unique_ptr<Worker>> started =
      co_await factory_->Start(slot->index, options_.startup_timeout);
  if (started.ok() && !shutting_down_) {
    slot->worker = std::move(*started);
    slot->generation = generation;
    slot->calls = 0;
    // Watched before it is handed out: the watch runs here until it waits, so a worker already
    // dead (killed right after its handshake) is found now, a start that failed (WatchForEnd),
    // and never given to a caller as if it were up.
    asio::co_spawn(context_, WatchForEnd(slot, slot->worker), asio::detached);
    if (slot->state == State::kStarting) {
      slot->restarts.Started();
      LogInfo("worker ", slot->index, " started (pid ", slot->worker->pid(), ")");
      metrics::WorkerStarted();
      MakeIdle(slot);
    }
  } else if (!started.ok()) {
    StartFailed(slot, started.status());
  } else {
    asio::co_spawn(context_, KillAndReap(std::move(*started)), asio::detached);
    slot->state = State::kStopped;
  }
  Kick();
}

asio::awaitable<void> AsyncWorkerPool::WatchForEnd(Slot* slot, std::shared_ptr<Worker> worker) {
  const std::optional<std::string> how = co_await worker->Ended();
  if (!how.has_value() || slot->worker != worker) co_return;  // retired on purpose
  if (slot->state == State::kStarting) {  // dead before StartWorker could hand it out
    StartFailed(slot, absl::UnavailableError(absl::StrCat("it ", *how, " as it started")));
    co_return;
  }
  if (slot->state == State::kBusy) {
    // Mid-exchange its caller sees that and replaces it; a worker a session keeps between
    // lines may end with no exchange to see it: it is replaced when it comes back (MakeIdle).
    slot->ended_while_held = how;
    co_return;
  }
  if (slot->state != State::kIdle) co_return;
  idle_.erase(std::find(idle_.begin(), idle_.end(), slot));
  ReplaceEnded(slot, *how, "while idle");
}

void AsyncWorkerPool::StartFailed(Slot* slot, const absl::Status& why) {
  const absl::Duration delay = slot->restarts.StartFailed();
  if (absl::IsInvalidArgument(why)) {
    // Not retried while the server starts: it stops, saying why (Start).
    LogError("worker ", slot->index, " refused the settings it was started with: ", why.message(),
             up_ ? absl::StrCat("; retrying in ", absl::FormatDuration(delay)) : "");
  } else {
    LogError("worker ", slot->index, " failed to start: ", why.message(), "; retrying in ",
             absl::FormatDuration(delay));
  }
  Retire(slot, delay, std::string(why.message()));
  slot->last_start_failure = why.code();
  // Callers waiting may now fail fast.
  if (!AnyCanServe()) admission_.FailAll(NoWorkerRunning());
}

void AsyncWorkerPool::ReplaceEnded(Slot* slot, std::string how, absl::string_view when) {
  LogError("worker ", slot->index, " (pid ", slot->worker->pid(), ") ", how, " ", when,
           "; replacing it");
  metrics::WorkerExited("crash");
  Retire(slot, slot->restarts.DiedWithoutTask(), std::move(how));
}

void AsyncWorkerPool::ReloadAll() {
  asio::dispatch(context_, [this] { ReloadHere(); });
}

void AsyncWorkerPool::ReloadHere() {
  // A reload asked for while one runs, or right after another request, is merged into one
  // more that starts when no reload runs and no request came for reload_quiet
  // (reload_requests.h): the code may have changed again since the last one began, but a storm
  // of SIGHUPs must not restart the workers once per signal.
  switch (reload_.Ask(absl::Now(), reload_.Running(slots_))) {
    case ReloadRequests::Answer::kMerged:
      LogInfo("reloads asked for in quick succession: one more will follow once they stop for ",
              absl::FormatDuration(options_.reload_quiet));
      Kick();  // the maintenance loop learns when it is due
      return;
    case ReloadRequests::Answer::kAlreadyMerged:
      return;
    case ReloadRequests::Answer::kStartNow:
      break;
  }
  LogInfo("reloading every worker, one at a time");
  AskKeptWorkersBack();
  Kick();
}

void AsyncWorkerPool::Shutdown() {
  asio::dispatch(context_, [this] { ShutdownHere(); });
}

void AsyncWorkerPool::ShutdownHere() {
  if (shutting_down_) return;
  shutting_down_ = true;
  for (Slot* slot : idle_) Retire(slot, absl::ZeroDuration(), "the server is shutting down");
  idle_.clear();
  // A busy worker's caller is waiting for its answer: killing the process makes that exchange
  // fail at once (its caller then replaces it), so that no shutdown waits for a function that
  // takes its time.
  for (auto& slot : slots_) {
    if (slot->state == State::kBusy && slot->worker != nullptr) slot->worker->Kill();
  }
  admission_.FailAll(ServerStopping(absl::UnavailableError("the server is shutting down")));
  Kick();
}

}  // namespace cnp::pool
