// The synchronous TaskRunner over an AsyncTaskRunner, for callers that must block until the
// answer is there: Upload (on the RPC server's upload threads). Each call is spawned onto the
// pool's context and the calling thread waits for its future; RunUnlessStopped carries the
// caller's stop (its call cancelled) to the pool as the cancellation of that await.
//
// A call made on the pool's own thread would wait for work only that thread can do: it is
// refused with FAILED_PRECONDITION instead of deadlocking.
#pragma once

#include <memory>
#include <stop_token>

#include "asio/io_context.hpp"
#include "service/pool/async_task_runner.h"
#include "service/pool/task_runner.h"

namespace cnp::pool {

class BlockingTaskRunner final : public TaskRunner {
 public:
  // `runner`'s operations are started on `pool_context` (its own context), which another
  // thread must be running.
  BlockingTaskRunner(AsyncTaskRunner& runner, asio::io_context& pool_context)
      : runner_(runner), pool_context_(pool_context) {}

  absl::StatusOr<Reply> Run(const Task& task, absl::Time deadline) override;
  // A stop cancels the task's await on the pool's context: CANCELLED at once, the task dropped
  // if it had not started, its worker killed and replaced if it had.
  absl::StatusOr<Reply> RunUnlessStopped(const Task& task, absl::Time deadline,
                                         std::stop_token stop) override;
  absl::StatusOr<std::unique_ptr<WorkerLease>> Lease(absl::Time deadline) override;

 private:
  class BlockingLease;
  bool OnPoolThread() const;

  AsyncTaskRunner& runner_;
  asio::io_context& pool_context_;
};

}  // namespace cnp::pool
