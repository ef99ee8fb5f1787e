#include "service/rpc/function_calls.h"

#include <exception>
#include <utility>

#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"

namespace cnp::rpc {
namespace {

using pool::Reply;
using pool::Task;

// Runs `call` to completion on the calling thread. An exception the call throws reaches the
// caller, as it did when the calls were plain functions.
absl::Status Complete(asio::awaitable<absl::Status> call) {
  asio::io_context context(1);
  absl::Status status = absl::InternalError("the call did not complete");
  std::exception_ptr thrown;
  asio::co_spawn(context, std::move(call),
                 [&status, &thrown](std::exception_ptr error, absl::Status result) {
                   thrown = error;
                   status = std::move(result);
                 });
  context.run();
  if (thrown) std::rethrow_exception(thrown);
  return status;
}

class BlockingLease final : public pool::AsyncWorkerLease {
 public:
  explicit BlockingLease(std::unique_ptr<pool::WorkerLease> lease) : lease_(std::move(lease)) {}
  asio::awaitable<absl::StatusOr<Reply>> Exchange(Task task, absl::Time deadline) override {
    co_return lease_->Exchange(task, deadline);
  }

 private:
  std::unique_ptr<pool::WorkerLease> lease_;
};

}  // namespace

// The synchronous pool seen through the awaitable interface: every operation blocks the
// calling thread until the pool answers, and none can be cancelled.
class FunctionCalls::BlockingRunner final : public pool::AsyncTaskRunner {
 public:
  explicit BlockingRunner(pool::TaskRunner& runner) : runner_(runner) {}

  asio::awaitable<absl::StatusOr<Reply>> Run(Task task, absl::Time deadline) override {
    co_return runner_.Run(task, deadline);
  }
  asio::awaitable<std::vector<absl::StatusOr<Reply>>> RunAll(std::vector<Task> tasks,
                                                             absl::Time deadline) override {
    co_return runner_.RunAll(tasks, deadline);
  }
  asio::awaitable<absl::StatusOr<std::unique_ptr<pool::AsyncWorkerLease>>> Lease(
      absl::Time deadline) override {
    absl::StatusOr<std::unique_ptr<pool::WorkerLease>> lease = runner_.Lease(deadline);
    if (!lease.ok()) co_return lease.status();
    co_return std::make_unique<BlockingLease>(std::move(*lease));
  }
  int size() const override { return runner_.size(); }

 private:
  pool::TaskRunner& runner_;
};

FunctionCalls::FunctionCalls(pool::TaskRunner& runner, CallOptions options)
    : runner_(std::make_unique<BlockingRunner>(runner)), calls_(*runner_, options) {}

FunctionCalls::~FunctionCalls() = default;

absl::Status FunctionCalls::MapEncoded(std::string_view request, absl::Time deadline,
                                       std::vector<std::string>& response) {
  return Complete(calls_.MapEncoded(request, deadline, response));
}

absl::Status FunctionCalls::Map(v1::MapRequest& request, absl::Time deadline,
                                v1::MapResponse& response) {
  return Complete(calls_.Map(request, deadline, response));
}

absl::Status FunctionCalls::Reduce(v1::ReduceRequest& request, absl::Time deadline,
                                   v1::ReduceResponse& response) {
  return Complete(calls_.Reduce(request, deadline, response));
}

absl::Status FunctionCalls::Validate(v1::ValidateRequest& request, absl::Time deadline,
                                     v1::ValidateResponse& response) {
  return Complete(calls_.Validate(request, deadline, response));
}

absl::Status FunctionCalls::CallDesignFunction(v1::DesignFunctionRequest& request,
                                               absl::Time deadline,
                                               v1::DesignFunctionResponse& response) {
  return Complete(calls_.CallDesignFunction(request, deadline, response));
}

absl::Status FunctionCalls::Resolve(v1::ResolveRequest& request, absl::Time deadline,
                                    v1::ResolveResponse& response) {
  return Complete(calls_.Resolve(request, deadline, response));
}

}  // namespace cnp::rpc
