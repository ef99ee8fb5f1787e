#include "tests/support/fake_task_runner.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "absl/time/clock.h"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"

namespace cnp::testing {
namespace {

using pool::Reply;
using pool::Task;

bool IsCancelled(const asio::cancellation_state& state) {
  return state.cancelled() != asio::cancellation_type::none;
}

absl::Status Cancelled() { return absl::CancelledError("the awaiting coroutine was cancelled"); }

// Waits until `end` on a timer of the awaiting coroutine's executor; CANCELLED if the awaiting
// coroutine is cancelled meanwhile (the timer honours its cancellation slot).
asio::awaitable<absl::Status> WaitUntil(absl::Time end) {
  asio::steady_timer timer(co_await asio::this_coro::executor,
                           absl::ToChronoNanoseconds(end - absl::Now()));
  asio::error_code error;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, error));
  if (error == asio::error::operation_aborted) co_return Cancelled();
  co_return absl::OkStatus();
}

}  // namespace

class FakeTaskRunner::FakeLease final : public pool::AsyncWorkerLease {
 public:
  explicit FakeLease(FakeTaskRunner& runner) : runner_(runner) {}

  asio::awaitable<absl::StatusOr<Reply>> Exchange(Task task, absl::Time deadline) override {
    runner_.deadlines_.push_back(deadline);
    const asio::cancellation_state cancellation = co_await asio::this_coro::cancellation_state;
    if (IsCancelled(cancellation)) {
      ++runner_.cancelled_;
      co_return Cancelled();
    }
    std::vector<Task> one;
    one.push_back(std::move(task));
    std::vector<absl::StatusOr<Reply>> replies = co_await runner_.Answer(std::move(one), deadline);
    co_return std::move(replies.front());
  }

 private:
  FakeTaskRunner& runner_;
};

FakeTaskRunner::FakeTaskRunner(int size, Script script)
    : size_(size), script_(std::move(script)) {}

asio::awaitable<absl::StatusOr<Reply>> FakeTaskRunner::Run(Task task, absl::Time deadline) {
  deadlines_.push_back(deadline);
  const asio::cancellation_state cancellation = co_await asio::this_coro::cancellation_state;
  if (IsCancelled(cancellation)) {
    ++cancelled_;
    co_return Cancelled();
  }
  std::vector<Task> one;
  one.push_back(std::move(task));
  std::vector<absl::StatusOr<Reply>> replies = co_await Answer(std::move(one), deadline);
  co_return std::move(replies.front());
}

// Not a coroutine itself: the caller's co_await is the only one, so a call made when the caller
// is already cancelled throws there, as it would with the pool.
asio::awaitable<std::vector<absl::StatusOr<Reply>>> FakeTaskRunner::RunAll(
    std::vector<Task> tasks, absl::Time deadline) {
  deadlines_.push_back(deadline);
  return Answer(std::move(tasks), deadline);
}

asio::awaitable<absl::StatusOr<std::unique_ptr<pool::AsyncWorkerLease>>> FakeTaskRunner::Lease(
    absl::Time deadline) {
  deadlines_.push_back(deadline);
  ++leases_;
  co_return std::make_unique<FakeLease>(*this);
}

asio::awaitable<std::vector<absl::StatusOr<Reply>>> FakeTaskRunner::Answer(
    std::vector<Task> tasks, absl::Time deadline) {
  const asio::cancellation_state cancellation = co_await asio::this_coro::cancellation_state;
  const absl::Time start = absl::Now();
  batches_.push_back(tasks.size());
  std::vector<FakeAnswer> answers;
  answers.reserve(tasks.size());
  for (const Task& task : tasks) {
    started_.push_back(task);
    if (on_start_) on_start_(task);
    answers.push_back(script_(task));
  }

  // The answers come in the order their delays pass; the results are in task order.
  std::vector<size_t> by_time(tasks.size());
  std::iota(by_time.begin(), by_time.end(), 0);
  std::stable_sort(by_time.begin(), by_time.end(),
                   [&answers](size_t a, size_t b) { return answers[a].delay < answers[b].delay; });
  std::vector<absl::StatusOr<Reply>> results(tasks.size(), absl::UnknownError("not answered"));
  absl::Status stopped;  // once cancelled or past the deadline, so is every task still running
  for (size_t i : by_time) {
    const absl::Time answered = start + answers[i].delay;
    // A task whose answer is due is answered, even if the call was cancelled meanwhile: it
    // finished before the cancellation reached it. asio throws at a cancelled coroutine that
    // co_awaits, so the state is asked first.
    if (stopped.ok() && std::min(answered, deadline) > absl::Now()) {
      if (IsCancelled(cancellation)) {
        stopped = Cancelled();
      } else {
        stopped = co_await WaitUntil(std::min(answered, deadline));
      }
    }
    if (stopped.ok() && answered > deadline) {
      stopped = absl::DeadlineExceededError("the deadline passed before the task was answered");
    }
    if (!stopped.ok()) {
      if (absl::IsCancelled(stopped)) ++cancelled_;
      results[i] = stopped;
      continue;
    }
    results[i] = std::move(answers[i].reply);
  }
  co_return results;
}

Reply FailureReply(worker::v1::Failure::Code code, std::string message) {
  Reply reply;
  reply.mutable_failure()->set_code(code);
  reply.mutable_failure()->set_message(std::move(message));
  return reply;
}

}  // namespace cnp::testing
