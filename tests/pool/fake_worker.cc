#include "tests/pool/fake_worker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "asio/redirect_error.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"

namespace cnp::pool::testing {

int FakeWorld::Alive() const {
  return static_cast<int>(std::count_if(live.begin(), live.end(),
                                        [](const FakeWorker* w) { return !w->ended(); }));
}

Task TaskNamed(const std::string& name) {
  Task task;
  task.mutable_validate()->set_function(name);
  return task;
}

const std::string& NameOf(const Task& task) { return task.validate().function(); }

FakeWorker::FakeWorker(FakeWorld& world, const asio::any_io_executor& executor)
    : world_(world), pid_(world.next_pid++), answer_(executor), ended_(executor) {
  ended_.expires_at(asio::steady_timer::time_point::max());
  world_.live.push_back(this);
}

FakeWorker::~FakeWorker() {
  world_.live.erase(std::find(world_.live.begin(), world_.live.end(), this));
}

void FakeWorker::End(std::string how) {
  if (ended()) return;
  how_ended_ = std::move(how);
  answer_.cancel();
  ended_.cancel();
}

std::optional<absl::StatusOr<Reply>> FakeWorker::Begin(const Task& task, FakeStep& step) {
  if (ended() || dead_unnoticed_) return absl::UnavailableError("the peer closed the connection");
  step = world_.script(task);
  if (step.kind == FakeStep::kTooLarge) {
    return absl::ResourceExhaustedError("a task of 2000000000 bytes is over the limit");
  }
  world_.tasks_seen.push_back(NameOf(task));
  world_.logs_early_asked.push_back(task.logs_early());
  world_.task_pids.push_back(pid_);
  if (step.kind == FakeStep::kCrash) {
    End(step.how);
    return absl::UnavailableError("the peer closed the connection");
  }
  if (step.kind == FakeStep::kGarbage) return absl::DataLossError("the worker sent a malformed reply");
  return std::nullopt;
}

asio::awaitable<absl::StatusOr<Reply>> FakeWorker::AwaitStep(FakeStep step) {
  world_.running.insert(pid_);
  for (const absl::Duration after : step.logs_after) {
    if (step.kind != FakeStep::kReply) break;
    answer_.expires_after(absl::ToChronoNanoseconds(after));
    asio::error_code ec;
    co_await answer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec || ended()) break;  // the answer's wait below tells what happened
    if (logs_ == nullptr) continue;  // the function works on; its lines come with its answer
    Reply interim;
    interim.mutable_task_log()->set_message(absl::StrCat("line ", world_.logs_forwarded));
    ++world_.logs_forwarded;
    logs_->OnLog(std::move(interim));
  }
  if (step.kind == FakeStep::kHang) {
    answer_.expires_at(asio::steady_timer::time_point::max());
  } else {
    answer_.expires_after(absl::ToChronoNanoseconds(step.delay));
  }
  asio::error_code ec;
  co_await answer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  absl::StatusOr<Reply> result;
  if (ended()) {
    result = absl::UnavailableError("the peer closed the connection");
  } else if (ec) {
    result = absl::CancelledError("the exchange was cancelled");
  } else {
    result = std::move(step.reply);
    if (step.dies_after_reply) dead_unnoticed_ = true;
  }
  world_.running.erase(pid_);
  co_return result;
}

asio::awaitable<absl::StatusOr<Reply>> FakeWorker::Exchange(const Task& task) {
  FakeStep step;
  if (std::optional<absl::StatusOr<Reply>> now = Begin(task, step)) co_return *std::move(now);
  co_return co_await AwaitStep(std::move(step));
}

QuickExchange FakeWorker::TryQuickExchange(const Task& task, absl::Duration wait) {
  using Outcome = QuickExchange::Outcome;
  if (!world_.quick) return QuickExchange();
  world_.last_quick_wait = wait;
  if (ended()) return QuickExchange(Outcome::kEndedBefore);
  FakeStep step;
  if (std::optional<absl::StatusOr<Reply>> now = Begin(task, step)) {
    return QuickExchange(Outcome::kDone, *std::move(now));
  }
  if (step.kind == FakeStep::kReply && step.delay == absl::ZeroDuration() &&
      step.logs_after.empty()) {
    ++world_.quick_exchanges;
    return QuickExchange(Outcome::kDone, std::move(step.reply));
  }
  pending_ = std::move(step);
  return QuickExchange(Outcome::kPending);
}

asio::awaitable<absl::StatusOr<Reply>> FakeWorker::FinishExchange() {
  // Taken out of the co_await's operands: GCC 12 destroys such a temporary twice.
  FakeStep step = std::exchange(pending_, FakeStep{});
  co_return co_await AwaitStep(std::move(step));
}

void FakeWorker::Kill() {
  world_.killed.insert(pid_);
  End("killed by signal 9 (Killed)");
}

asio::awaitable<std::optional<std::string>> FakeWorker::Ended() {
  if (!ended()) {
    asio::error_code ec;
    co_await ended_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!ended()) co_return std::nullopt;  // cancelled
  }
  world_.reaped.insert(pid_);
  co_return how_ended_;
}

asio::awaitable<absl::StatusOr<std::unique_ptr<Worker>>> FakeWorkerFactory::Start(
    int index, absl::Duration timeout) {
  const int attempt = world_.start_attempts++;
  world_.start_times.push_back(absl::Now());
  world_.alive_at_start.push_back(world_.Alive());
  const FakeStart plan = world_.starts(index, attempt);
  auto executor = co_await asio::this_coro::executor;
  if (plan.kind == FakeStart::kRefuse) co_return absl::UnavailableError(plan.why);
  if (plan.kind == FakeStart::kRefuseSetting) co_return absl::InvalidArgumentError(plan.why);
  if (plan.kind == FakeStart::kHang) {
    asio::steady_timer timer(executor, absl::ToChronoNanoseconds(timeout));
    asio::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_return absl::DeadlineExceededError(
        absl::StrCat("it did not answer within ", absl::FormatDuration(timeout)));
  }
  auto worker = std::make_unique<FakeWorker>(world_, executor);
  if (plan.kind == FakeStart::kDiesAtOnce) worker->DieNow("was killed by signal 9 (SIGKILL)");
  co_return std::unique_ptr<Worker>(std::move(worker));
}

}  // namespace cnp::pool::testing
