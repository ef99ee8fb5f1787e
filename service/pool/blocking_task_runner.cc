#include "service/pool/blocking_task_runner.h"

#include <chrono>
#include <exception>
#include <future>
#include <utility>

#include "asio/bind_cancellation_slot.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/co_spawn.hpp"
#include "asio/post.hpp"

namespace cnp::pool {
namespace {

absl::Status OnPoolThreadError() {
  return absl::FailedPreconditionError(
      "a blocking worker call was made on the worker pool's own thread, where it could never "
      "finish; await the pool's AsyncTaskRunner there instead");
}

// Starts `op` on `context` and waits for its result on the calling thread. A stop requested
// through `stop` meanwhile cancels `op` (terminal cancellation, as a cancelled RPC's await of
// the pool: a task still queued is dropped, a running one has its worker replaced), and the
// wait ends as soon as `op` has completed so.
template <class T>
T Wait(asio::io_context& context, asio::awaitable<T> op, std::stop_token stop = {}) {
  // Lives until both sides are done with it. `cancel` is emitted, and `done` read and written,
  // only on `context`'s thread: the operation's cancellation handlers (a timer's, a socket's)
  // must run where the operation runs, not on the thread that asks for the stop.
  struct Shared {
    std::promise<T> promise;
    asio::cancellation_signal cancel;
    bool done = false;
  };
  auto shared = std::make_shared<Shared>();
  std::future<T> future = shared->promise.get_future();
  asio::co_spawn(context, std::move(op),
                 asio::bind_cancellation_slot(
                     shared->cancel.slot(), [shared](std::exception_ptr e, T value) {
                       shared->done = true;
                       if (e) {
                         shared->promise.set_exception(e);
                       } else {
                         shared->promise.set_value(std::move(value));
                       }
                     }));
  // Runs on the thread that requests the stop (an Upload's gRPC thread, as its call is
  // cancelled), or here at once if it was requested already; gone before this returns.
  std::stop_callback on_stop(stop, [&context, shared] {
    asio::post(context, [shared] {
      if (!shared->done) shared->cancel.emit(asio::cancellation_type::terminal);
    });
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

absl::StatusOr<Reply> BlockingTaskRunner::RunUnlessStopped(const Task& task, absl::Time deadline,
                                                            std::stop_token stop) {
  if (OnPoolThread()) return OnPoolThreadError();
  // Nothing is sent for a caller that is already gone.
  if (stop.stop_requested()) {
    return absl::CancelledError("the call was cancelled before its task was sent to a worker");
  }
  return Wait(pool_context_, runner_.Run(task, deadline), std::move(stop));
}

absl::StatusOr<std::unique_ptr<WorkerLease>> BlockingTaskRunner::Lease(absl::Time deadline) {
  if (OnPoolThread()) return OnPoolThreadError();
  absl::StatusOr<std::unique_ptr<AsyncWorkerLease>> lease =
      Wait(pool_context_, runner_.Lease(deadline));
  if (!lease.ok()) return lease.status();
  return std::make_unique<BlockingLease>(std::move(*lease), *this);
}

}  // namespace cnp::pool
