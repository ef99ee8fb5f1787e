#include "service/pool/blocking_task_runner.h"

#include <chrono>
#include <exception>
#include <future>
#include <utility>

#include "asio/co_spawn.hpp"

namespace cnp::pool {
namespace {

absl::Status OnPoolThreadError() {
  return absl::FailedPreconditionError(
      "a blocking worker call was made on the worker pool's own thread, where it could never "
      "finish; await the pool's AsyncTaskRunner there instead");
}

// Starts `op` on `context` and waits for its result on the calling thread.
template <class T>
T Wait(asio::io_context& context, asio::awaitable<T> op) {
  auto promise = std::make_shared<std::promise<T>>();
  std::future<T> future = promise->get_future();
  asio::co_spawn(context, std::move(op), [promise](std::exception_ptr e, T value) {
    if (e) {
      promise->set_exception(e);
    } else {
      promise->set_value(std::move(value));
    }
  });
  return future.get();
}

}  // namespace

class BlockingTaskRunner::BlockingLease final : public WorkerLease {
 public:
  BlockingLease(std::unique_ptr<AsyncWorkerLease> lease, BlockingTaskRunner& runner)
      : lease_(std::move(lease)), runner_(runner) {}

  absl::StatusOr<Reply> Exchange(const Task& task, absl::Time deadline) override {
    if (runner_.OnPoolThread()) return OnPoolThreadError();
    return Wait(runner_.pool_context_, lease_->Exchange(task, deadline));
  }

 private:
  std::unique_ptr<AsyncWorkerLease> lease_;
  BlockingTaskRunner& runner_;
};

bool BlockingTaskRunner::OnPoolThread() const {
  return pool_context_.get_executor().running_in_this_thread();
}

absl::StatusOr<Reply> BlockingTaskRunner::Run(const Task& task, absl::Time deadline) {
  if (OnPoolThread()) return OnPoolThreadError();
  return Wait(pool_context_, runner_.Run(task, deadline));
}

absl::StatusOr<std::unique_ptr<WorkerLease>> BlockingTaskRunner::Lease(absl::Time deadline) {
  if (OnPoolThread()) return OnPoolThreadError();
  absl::StatusOr<std::unique_ptr<AsyncWorkerLease>> lease =
      Wait(pool_context_, runner_.Lease(deadline));
  if (!lease.ok()) return lease.status();
  return std::make_unique<BlockingLease>(std::move(*lease), *this);
}

}  // namespace cnp::pool
