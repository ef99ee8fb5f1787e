// A stand-in for the worker pool's awaitable interface (pool::AsyncTaskRunner), for tests of
// the code that awaits it: each task is answered by a script written in C++, after the delay
// the script chose, on a timer of the awaiting coroutine's executor (the test's io_context).
// Like the pool, it honours the awaiting coroutine's cancellation and the deadline, and it
// records what it was asked, so a test can say which tasks ran, how they were batched, and
// which were cancelled.
//
// The fake has as many "workers" as tasks: a RunAll's tasks all start at once and each is
// answered when its own delay has passed. Use it from one thread (the io_context's).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "service/pool/async_task_runner.h"

namespace cnp::testing {

// How the fake answers one task: with `reply` (an error status is an infrastructure failure;
// a Reply holding a Failure is the user's), `delay` after the task started.
struct FakeAnswer {
  absl::StatusOr<pool::Reply> reply;
  absl::Duration delay = absl::ZeroDuration();
};

class FakeTaskRunner final : public pool::AsyncTaskRunner {
 public:
  using Script = std::function<FakeAnswer(const pool::Task&)>;

  // `size` is what size() reports: how many workers the callers believe the pool has.
  FakeTaskRunner(int size, Script script);

  asio::awaitable<absl::StatusOr<pool::Reply>> Run(pool::Task task, absl::Time deadline) override;
  asio::awaitable<std::vector<absl::StatusOr<pool::Reply>>> RunAll(std::vector<pool::Task> tasks,
                                                                   absl::Time deadline) override;
  asio::awaitable<absl::StatusOr<std::unique_ptr<pool::AsyncWorkerLease>>> Lease(
      absl::Time deadline) override;
  int size() const override { return size_; }

  // Called as each task starts, before the script answers it: a test may cancel the call
  // here (emit on its cancellation signal), or look at the task.
  void set_on_start(std::function<void(const pool::Task&)> on_start) {
    on_start_ = std::move(on_start);
  }

  // Every task started (by Run, RunAll or a lease's Exchange), in the order they started.
  const std::vector<pool::Task>& started() const { return started_; }
  // How many tasks each Run (1), RunAll or Exchange started, in order.
  const std::vector<size_t>& batches() const { return batches_; }
  // The deadline each Run, RunAll, Lease and Exchange was given, in order.
  const std::vector<absl::Time>& deadlines() const { return deadlines_; }
  // How many tasks ended CANCELLED because their awaiting coroutine was cancelled, before or
  // while they ran.
  int cancelled() const { return cancelled_; }
  // How many leases were taken.
  int leases() const { return leases_; }

 private:
  class FakeLease;

  // Starts `tasks` together and answers each when its delay has passed, in task order.
  asio::awaitable<std::vector<absl::StatusOr<pool::Reply>>> Answer(std::vector<pool::Task> tasks,
                                                                   absl::Time deadline);

  const int size_;
  const Script script_;
  std::function<void(const pool::Task&)> on_start_;
  std::vector<pool::Task> started_;
  std::vector<size_t> batches_;
  std::vector<absl::Time> deadlines_;
  int cancelled_ = 0;
  int leases_ = 0;
};

// A Reply holding the user's whole-task failure, e.g. a refused module.
pool::Reply FailureReply(worker::v1::Failure::Code code, std::string message);

}  // namespace cnp::testing
