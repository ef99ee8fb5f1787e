// What the server's request handlers (coroutines on the gRPC threads' execution contexts) need
// from the worker pool: run a task on some worker, run many at once, or hold one worker for a
// multi-step exchange, all awaited. None blocks the thread that awaits, but for one bounded
// wait: an exchange on a held worker (a lease) waits up to AsyncWorkerPool::kQuickWait (500 us)
// for a quick reply on the caller's thread before it is awaited like the rest.
//
// Every operation resumes the awaiting coroutine on that coroutine's own executor, whatever
// executor the pool does its I/O on. Every operation honours the awaiting coroutine's
// cancellation (terminal cancellation through its cancellation slot, e.g. when the client of
// an RPC cancels or goes away): a task still waiting for a worker is dropped and never runs; a
// task a worker is running has that worker killed and replaced (its state is unknown); the
// operation then completes with CANCELLED. A deadline that passes does the same and completes
// with DEADLINE_EXCEEDED.
//
// The synchronous TaskRunner (task_runner.h) stays for code that runs where blocking is right:
// a worker running its own tasks in process (direct sessions), and Upload on its own executor.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "service/pool/worker.h"
#include "worker.pb.h"

namespace cnp::pool {

using worker::v1::Reply;
using worker::v1::Task;

// How long before a call's deadline a cancel of it counts as the deadline passing: a client
// cancels at its deadline, which comes before the server's copy of it by the time the request
// took to arrive. The pool answers such a call DEADLINE_EXCEEDED, logs it and counts its
// worker's exit as the deadline's, and the server counts the call so (service/rpc/rpc_server.cc
// uses this constant).
inline constexpr absl::Duration kDeadlineCancelSlack = absl::Milliseconds(100);

// In RunAll's results, a task the batch did not run, or whose answer it stopped waiting for,
// because `cause` stopped it (another task failed, the deadline, the call cancelled, no
// worker): `cause`'s code and message, marked so that the caller can tell the task at fault
// from those that were merely not run.
inline constexpr char kNotRunInBatchPayload[] = "cnp.pool/not-run-in-batch";
inline absl::Status NotRunInBatch(absl::Status cause) {
  cause.SetPayload(kNotRunInBatchPayload, absl::Cord());
  return cause;
}
inline bool WasNotRunInBatch(const absl::Status& status) {
  return status.GetPayload(kNotRunInBatchPayload).has_value();
}

// A worker held by one caller for a multi-step exchange (an interactive list function). The
// worker goes back to the pool when the lease is destroyed; a lease whose exchange failed or
// was cancelled half-way replaces its worker instead, so no other caller sees a worker in an
// unknown state.
class AsyncWorkerLease {
 public:
  virtual ~AsyncWorkerLease() = default;
  virtual asio::awaitable<absl::StatusOr<Reply>> Exchange(Task task, absl::Time deadline) = 0;
  // Exchange, with the task's log() lines handed to `logs` as its function makes them
  // (Task.logs_early is set for it), and its deadline moved to what `logs` answers for each.
  // The default hands over nothing: the lines come with the answer, the deadline stays.
  virtual asio::awaitable<absl::StatusOr<Reply>> ExchangeForwardingLogs(Task task,
                                                                        absl::Time deadline,
                                                                        TaskLogListener& logs) {
    (void)logs;
    co_return co_await Exchange(std::move(task), deadline);
  }

  // After a failed Exchange: the task was never sent because the worker had ended while the
  // lease held it idle (it was replaced). The task itself is not at fault; run it elsewhere.
  virtual bool EndedBeforeTask() const { return false; }
  // The worker should go back to the pool now: a reply asked for it to be replaced, or it has
  // run its --max-calls-per-worker. (A lease of a list ends anyway; a kept worker's holder
  // gives it back.)
  virtual bool ShouldGiveBack() const { return false; }
};

class AsyncTaskRunner {
 public:
  virtual ~AsyncTaskRunner() = default;

  // Runs `task` on a free worker. A Failure reply is a Reply, not an error status: whole-task
  // failures that are the user's (bad name, refused module, version mismatch) stay data. The
  // status is an error only for infrastructure failures and for the caller's own end:
  //   DEADLINE_EXCEEDED   `deadline` passed (waiting, or running: the worker was replaced)
  //   CANCELLED           the awaiting coroutine was cancelled (same consequences)
  //   UNAVAILABLE         the worker crashed, no worker can start, or the pool is shutting down
  //   RESOURCE_EXHAUSTED  the queue of callers waiting for a worker (--max-queue) is full
  virtual asio::awaitable<absl::StatusOr<Reply>> Run(Task task, absl::Time deadline) = 0;

  // Runs independent tasks concurrently on up to as many workers as there are tasks, each
  // worker taking the next task as soon as it answers; the results are in task order.
  // Cancelling it cancels every task still queued or running. The tasks are parts of one call:
  // the first that fails (an error status) stops the batch, and RunAll answers then. The tasks
  // it did not start, and those still running whose answers it no longer waits for (they run
  // to their end on their workers, which are not killed for it), have the status that stopped
  // it marked NotRunInBatch. A worker goes to a caller waiting for one between two tasks: a
  // caller waits for one task of a batch, not for the batch.
  virtual asio::awaitable<std::vector<absl::StatusOr<Reply>>> RunAll(std::vector<Task> tasks,
                                                                     absl::Time deadline) = 0;

  // Holds one worker for a multi-step exchange.
  virtual asio::awaitable<absl::StatusOr<std::unique_ptr<AsyncWorkerLease>>> Lease(
      absl::Time deadline) = 0;

  // Run, keeping the worker for the caller's next calls if nobody waits for one when it has
  // answered: for a caller whose calls come one after another with little time between them (a
  // CouchDB session in lockstep). Exchanges on the kept worker's lease skip the admission queue,
  // and a reply that comes quickly is read on the caller's own thread
  // (Worker::TryQuickExchange). It is kept only while nobody else needs it: `wanted` is called,
  // once, on a thread of the pool's, when another caller waits for a worker, a batch could use
  // it, a reload or the memory cap wants it replaced; the holder then gives the lease back as
  // soon as its exchange in progress, if any, ends. `logs`, if not null, is handed the task's
  // log() lines as ExchangeForwardingLogs's. The default keeps nothing and hands over nothing.
  struct KeptRun {
    absl::StatusOr<Reply> reply;
    std::unique_ptr<AsyncWorkerLease> kept;  // null: not kept
  };
  virtual asio::awaitable<KeptRun> RunAndKeep(Task task, absl::Time deadline,
                                              std::function<void()> /*wanted*/,
                                              TaskLogListener* /*logs*/ = nullptr) {
    absl::StatusOr<Reply> reply = co_await Run(std::move(task), deadline);
    co_return KeptRun{std::move(reply), nullptr};
  }

  // How many workers the pool runs; batch callers split work into this many parts.
  virtual int size() const = 0;
};

}  // namespace cnp::pool
