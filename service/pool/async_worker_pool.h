// The supervised pool of workers, as coroutines on one asio::io_context (the server's control
// context, run by one thread).
//
// Every piece of the pool's state - the slots, the idle list, the admission queue - is touched
// only on that context, so there is no lock. Callers are coroutines on other executors (the gRPC
// threads, tests' contexts): each operation hops to the pool's context (AwaitOn), carrying the
// caller's cancellation with it, and resumes the caller on its own executor.
//
// The one exception is a lease's exchange, and a kept worker's above all (RunAndKeep: a
// CouchDB Session stream in lockstep): the holder sends the task and waits up to kQuickWait for
// the reply on its own thread (Worker::TryQuickExchange), and only a slower reply, a failure or
// the end of the lease goes through the pool's context. Those two hops per line were most of a
// remote Session line's cost (README, "The server's runtime"). A kept worker is asked back
// (its holder's `wanted`) when a caller would wait for a worker, a batch could use it, a reload
// or the memory cap wants it replaced.
//
// What it does on its own context, all awaited, nothing polled or blocked on:
//   admission   callers wait in a queue of at most max_queue (admission_queue.h); an idle
//               worker goes to the first; a batch (RunAll) gives each of its workers to a
//               caller waiting, between two of its tasks, and queues behind it
//   exchange    a task is written to the worker and its reply awaited, raced against the deadline
//   failures    a worker that crashed, missed its deadline or whose caller cancelled mid-task is
//               killed, reaped from its pidfd, and its slot restarted when its RestartPolicy
//               says (restart_policy.h: at once when its task was at fault, after a doubling
//               backoff when it failed to start or died idle); callers fail fast when no
//               worker can start
//   recycling   after a call, when RecycleAfterCalls says (recycling_policy.h: a reply asked
//               for it, max_calls_per_worker, a reload); idle workers near memory_cap_bytes
//               at once, one a session keeps asked back and replaced when it returns; on a
//               reload (SIGHUP), stale idle workers one at a time (rolling_reload.h)
// The workers come from a WorkerFactory: cnp-worker processes in the server, fakes in tests.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "service/pool/admission_queue.h"
#include "service/pool/async_task_runner.h"
#include "service/pool/batch.h"
#include "service/pool/pool_options.h"
#include "service/pool/rolling_reload.h"
#include "service/pool/replacement_asked.h"
#include "service/pool/restarted_deadline.h"
#include "service/pool/worker.h"
#include "service/pool/worker_slot.h"

namespace cnp::pool {

class AsyncWorkerPool final : public AsyncTaskRunner {
 public:
  AsyncWorkerPool(PoolOptions options, std::unique_ptr<WorkerFactory> factory,
                  asio::io_context& context);
  // Kills whatever workers are left. Destroy the pool only when `context` no longer runs
  // (its thread joined) or from that thread once Shutdown has run.
  ~AsyncWorkerPool() override;

  // Starts every worker and waits, running `context` on the calling thread until each has
  // answered or failed. Fails when no worker at all could start, with the reason. Call it
  // before any other thread runs the context.
  absl::Status Start();

  asio::awaitable<absl::StatusOr<Reply>> Run(Task task, absl::Time deadline) override;
  asio::awaitable<std::vector<absl::StatusOr<Reply>>> RunAll(std::vector<Task> tasks,
                                                             absl::Time deadline) override;
  asio::awaitable<absl::StatusOr<std::unique_ptr<AsyncWorkerLease>>> Lease(
      absl::Time deadline) override;
  asio::awaitable<KeptRun> RunAndKeep(Task task, absl::Time deadline,
                                      std::function<void()> wanted,
                                      TaskLogListener* logs = nullptr) override;
  int size() const override { return options_.workers; }

  // How long a leaseholder blocks its own thread for a reply before it leaves the rest of the
  // exchange to the pool's context (Worker::TryQuickExchange): a CouchDB map_doc is answered
  // in tens of microseconds, and a thread that waits for it itself saves the two thread
  // hand-overs that cost most of a Session line; a slower function is awaited as any other.
  static constexpr absl::Duration kQuickWait = absl::Microseconds(500);

  // Replaces every worker with a fresh process, one at a time, so code changed on disk is
  // imported anew without failing a call (SIGHUP). Reloads asked for while one runs are merged
  // into one more after it. Callable from any thread.
  void ReloadAll();
  // Fails waiting callers and kills every worker, busy ones included: calls in flight fail at
  // once with UNAVAILABLE. Idempotent, callable from any thread (it is done on the context).
  void Shutdown();

  asio::io_context::executor_type executor() { return context_.get_executor(); }

 private:
  using Slot = WorkerSlot;
  using State = WorkerSlot::State;
  class LeaseImpl;

  // The operations, on the pool's context.
  asio::awaitable<absl::StatusOr<Reply>> RunHere(Task task, absl::Time deadline);
  asio::awaitable<std::vector<absl::StatusOr<Reply>>> RunAllHere(std::vector<Task> tasks,
                                                                 absl::Time deadline);
  // Feeds the batch's tasks to `slot`'s worker, or, without one, to one a session gives back
  // (a late feeder). After each task it gives the worker to a caller waiting for one, if any,
  // and queues behind it. `signal` cancels it: the batch's, or once it waits for a worker the
  // batch no longer needs (Batch::waiting).
  asio::awaitable<void> Feed(Batch& batch, Slot* slot, asio::cancellation_signal* signal);
  // Keeps a batch RunAll answered early (a task failed) until its last feeder ends.
  static asio::awaitable<void> OutliveFeeders(std::unique_ptr<Batch> batch);
  asio::awaitable<absl::StatusOr<std::unique_ptr<AsyncWorkerLease>>> LeaseHere(
      absl::Time deadline);
  asio::awaitable<absl::StatusOr<Reply>> LeaseExchangeHere(Slot* slot, Task task,
                                                           absl::Time deadline, bool sent,
                                                           absl::Time began, bool* lost,
                                                           const RestartedDeadline* restarts);
  // A lease's quick exchange failed on the holder's thread: the worker is replaced as
  // ExchangeOn would (a crash, a malformed reply), or, `ended_before` the task was sent, as a
  // worker that died idle.
  asio::awaitable<absl::StatusOr<Reply>> LeaseFailedHere(Slot* slot, Task task,
                                                         absl::Status failure, bool ended_before,
                                                         bool* lost);
  asio::awaitable<KeptRun> RunAndKeepHere(Task task, absl::Time deadline,
                                          std::function<void()> wanted, TaskLogListener* logs);
  // Asks the callers that keep workers (RunAndKeep) for them back: every one, or those
  // `which` picks.
  void AskKeptWorkersBack(const std::function<bool(const Slot&)>& which = nullptr);

  // Who asks for a worker: a caller, let in while --max-queue allows; a batch's feeder that
  // waits for a worker a session keeps, the same but not counted against --max-queue (the
  // batch is one caller); or a feeder that gave its worker to another caller, queued whatever
  // the queue holds (it was let in already), and not counted either.
  enum class Asker { kCaller, kLateFeeder, kFeederAgain };
  // A worker for the caller: an idle one, else one handed over in queue order. `batch`: the
  // caller is that batch, or its feeder.
  asio::awaitable<absl::StatusOr<Slot*>> Acquire(absl::Time deadline,
                                                 const Batch* batch = nullptr,
                                                 Asker asker = Asker::kCaller);
  Slot* TryAcquire();
  // One exchange on a held worker. On an error the status says what happened, in words for
  // the user; the worker is then gone (killed and being replaced) unless the task was never
  // sent (the deadline had passed or the caller had cancelled): Held() tells. `sent`: the task
  // went out in a quick exchange, and only the rest is done here (Worker::FinishExchange).
  // `began`: when the exchange began (the quick exchange's start), InfinitePast for now.
  // `restarts`: where the task's log() lines move its deadline to, if they do.
  asio::awaitable<absl::StatusOr<Reply>> ExchangeOn(
      Slot* slot, const Task& task, absl::Time deadline, bool sent = false,
      absl::Time began = absl::InfinitePast(), const RestartedDeadline* restarts = nullptr);
  // After an exchange failed with `failure` (its task sent, the worker's state unknown): kills
  // and replaces the worker, logs why, and returns the caller's error. `ran`: how long the
  // task had run, which a missed deadline's message says.
  asio::awaitable<absl::Status> ReplaceAfterFailure(Slot* slot, const Task& task,
                                                    absl::Status failure, bool timed_out,
                                                    absl::Duration ran = absl::ZeroDuration());
  // Counts `calls` that ended well on a held worker; true if the worker may take another,
  // false if it was replaced (recycling - by count, asked for by a reply, or over the memory cap
  // while kept - reload, shutdown).
  bool CountCall(Slot* slot, ReplacementAsked asked, int64_t calls = 1);
  // Gives a held worker back after its calls (counted here).
  void FinishCall(Slot* slot, ReplacementAsked asked, int64_t calls = 1);

  // Hands a usable worker to the first waiting caller, or makes it idle; one that ended while
  // held (ended_while_held) is replaced instead. `passed_by`: a batch's feeder gives its worker
  // away, to the first caller waiting that is not one of that batch's feeders.
  void MakeIdle(Slot* slot, const Batch* passed_by = nullptr);
  // A worker that ended by itself (how, when: "while idle"): logged, counted as a death no task
  // explains, and replaced after the restart backoff.
  void ReplaceEnded(Slot* slot, std::string how, absl::string_view when);
  // The slot's start failed (`why`): logged, and retried after the restart backoff; callers
  // waiting fail fast once no slot can come up.
  void StartFailed(Slot* slot, const absl::Status& why);
  // Kills the slot's worker (reaped in the background) and schedules its restart.
  void Retire(Slot* slot, absl::Duration restart_delay, std::string why);
  // Some slot serves, or may still come up: waiting for a worker makes sense.
  bool AnyCanServe() const;
  // Some worker is being replaced (starting, or down until its restart): a reload replaces
  // another only after it.
  bool Replacing() const;
  static bool Held(const Slot* slot) {
    return slot->state == State::kBusy && slot->worker != nullptr;
  }
  absl::Status NoWorkerRunning() const;

  void Kick();
  // The pool's maintenance: a loop that starts slots due to (re)start, moves reloads on and
  // checks the workers' memory, then sleeps until the next is due or it is kicked.
  asio::awaitable<void> Maintain();
  // A reload's follow-up begins, or the reload is reported finished.
  void AdvanceReload(absl::Time now, absl::Time& next_due);
  // Starts the slots whose restart is due, or a reload's next stale idle worker; `next_due` is
  // brought forward to the next restart. Whether any start began.
  bool StartDueWorkers(absl::Time now, absl::Time& next_due);
  // Replaces idle workers near memory_cap_bytes (memory_cap.h) and asks kept ones back.
  // Whether any was.
  bool ReplaceWorkersOverMemoryCap();
  asio::awaitable<void> StartWorker(Slot* slot);
  // Awaits the end of `worker`: one that dies while idle (killed by the OOM killer, say) is
  // replaced before a caller is handed a dead worker; one that dies while a caller holds it is
  // noted (ended_while_held) and replaced when it comes back.
  asio::awaitable<void> WatchForEnd(Slot* slot, std::shared_ptr<Worker> worker);
  void ReloadHere();
  void ShutdownHere();

  const PoolOptions options_;
  const std::unique_ptr<WorkerFactory> factory_;
  asio::io_context& context_;
  asio::steady_timer wake_;  // Maintain's sleep, cancelled to wake it

  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> idle_;
  AdmissionQueue admission_{context_, options_.max_queue};
  bool started_ = false;
  bool up_ = false;  // Start returned OK: a start that fails now is retried, not the end
  bool shutting_down_ = false;
  RollingReload reload_{options_.reload_quiet};
};

}  // namespace cnp::pool
