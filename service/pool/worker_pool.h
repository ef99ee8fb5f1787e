// The supervised pool of worker processes.
//
// Calls run on the thread that asks (a gRPC thread): it takes an idle worker, exchanges frames
// with it and gives it back, so the hot path has no thread hop between receiving a request and
// talking to Python. Everything slow or periodic - starting workers and checking that Python
// came up, restarting crashed ones with backoff, recycling, rolling reloads, the memory watch -
// runs as coroutines on the control loop (an asio::io_context), never on a caller's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "asio/awaitable.hpp"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "service/pool/pool_options.h"
#include "service/pool/task_runner.h"
#include "service/pool/worker_process.h"

namespace cnp::pool {

class WorkerPool final : public TaskRunner {
 public:
  WorkerPool(PoolOptions options, asio::io_context& control);
  ~WorkerPool() override;

  // Starts every worker and waits (running `control` until then) until each has answered or
  // failed. Fails when no worker at all could start, with the reason.
  absl::Status Start();

  absl::StatusOr<Reply> Run(const Task& task, absl::Time deadline) override;
  std::vector<absl::StatusOr<Reply>> RunAll(const std::vector<Task>& tasks,
                                            absl::Time deadline) override;
  absl::StatusOr<std::unique_ptr<WorkerLease>> Lease(absl::Time deadline) override;
  int size() const override { return options_.workers; }

  // Replaces every worker with a fresh process, one at a time, so code changed on disk is
  // imported anew without failing a call (SIGHUP). Reloads asked for while one runs are merged
  // into one more after it.
  void ReloadAll();
  // Fails waiting callers and kills every worker, busy ones included: calls in flight fail at
  // once with UNAVAILABLE. Idempotent, callable from any thread.
  void Shutdown();


 private:
  enum class State { kStarting, kIdle, kBusy, kDown, kStopped };
  struct Slot {
    int index = 0;
    State state = State::kDown;
    std::unique_ptr<WorkerProcess> process;
    int64_t calls = 0;
    uint64_t generation = 0;     // reload generation the process was started in
    int consecutive_failures = 0;
    absl::Time restart_at = absl::InfinitePast();
    std::string last_failure;
  };
  class LeaseImpl;

  absl::StatusOr<Slot*> Acquire(absl::Time deadline, bool wait);
  // Gives a worker back. `failure` is non-empty when the exchange failed: the worker is then
  // killed and replaced, after a backoff when it `crashed`.
  void Release(Slot* slot, const Reply* reply, const absl::Status& failure);
  // One exchange on an acquired slot, with the errors turned into messages a user can act on.
  absl::StatusOr<Reply> ExchangeOn(Slot* slot, const Task& task, absl::Time deadline);
  // Turns a failed exchange into the status the caller sees, saying what happened to the worker.
  absl::Status Explain(Slot* slot, const Task& task, const absl::Status& failure);

  void Kick();
  // Some worker still runs code imported before the last reload began.
  bool ReloadRunning() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ShuttingDown() const {
    absl::MutexLock lock(&mu_);
    return shutting_down_;
  }
  asio::awaitable<void> Maintain();
  asio::awaitable<void> StartWorker(Slot* slot);
  void MarkDown(Slot* slot, absl::Duration delay, std::string why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const PoolOptions options_;
  asio::io_context& control_;
  asio::steady_timer wake_;  // touched only on the control loop

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Slot>> slots_ ABSL_GUARDED_BY(mu_);
  std::vector<Slot*> idle_ ABSL_GUARDED_BY(mu_);
  absl::CondVar cv_;  // an idle worker appeared, or shutdown began
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool reload_pending_ ABSL_GUARDED_BY(mu_) = false;   // asked for while one was running
  absl::Time last_reload_request_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool reload_announced_ ABSL_GUARDED_BY(mu_) = true;  // "reload finished" was logged
};

}  // namespace cnp::pool
