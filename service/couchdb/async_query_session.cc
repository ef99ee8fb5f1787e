#include "service/couchdb/async_query_session.h"

#include <algorithm>
#include <utility>
#include <variant>

#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/redirect_error.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"
#include "common/retry_advice.h"
#include "service/common/function_errors.h"
#include "service/common/function_log.h"
#include "absl/strings/str_cat.h"
#include "service/common/log.h"
#include "service/couchdb/json_text.h"
#include "service/metrics/service_metrics.h"

namespace cnp::couchdb {

namespace {

// The end of rows for a list nobody will finish, sent on the lease it owns.
asio::awaitable<void> EndAbandonedList(std::unique_ptr<pool::AsyncWorkerLease> lease,
                                       absl::Time deadline) {
  worker::v1::Task end_of_rows;
  end_of_rows.mutable_list_row();
  absl::StatusOr<worker::v1::Reply> ignored =
      co_await lease->Exchange(std::move(end_of_rows), deadline);
  (void)ignored;  // the worker was replaced if it failed; nobody waits for the list
}

}  // namespace

AsyncQuerySession::~AsyncQuerySession() {
  LetKeptWorkerGo();
  StopIdleListWatch();
  if (lease_ == nullptr || !executor_.has_value()) return;
  EndListInBackground(std::move(lease_), absl::Now() + std::max(CallBudget(), absl::Seconds(1)));
}

void AsyncQuerySession::EndListInBackground(std::unique_ptr<pool::AsyncWorkerLease> lease,
                                            absl::Time deadline) {
  asio::co_spawn(*executor_, EndAbandonedList(std::move(lease), deadline), asio::detached);
}

asio::awaitable<std::optional<v1::SessionOutput>> AsyncQuerySession::Handle(
    std::string_view line, std::string* owner) {
  StopIdleListWatch();
  cut_by_shutdown_ = absl::OkStatus();
  executor_ = co_await asio::this_coro::executor;
  if (early_writer_ != nullptr && early_logs_ == nullptr) {
    early_logs_ = std::make_shared<EarlyLogLines>(*executor_, early_writer_);
  }
  const bool answered = co_await Drive(protocol_.Handle(line, owner));
  protocol_.ReleaseLargeBuffers();
  StartIdleListWatch();
  if (!answered) co_return std::nullopt;
  v1::SessionOutput& output = protocol_.output();
  // The log lines the stream has not written yet come first.
  if (early_logs_ != nullptr) early_logs_->TakeUnwritten(output);
  if (max_answer_bytes_ > 0 && static_cast<int64_t>(output.ByteSizeLong()) > max_answer_bytes_) {
    // Sending it would fail the stream's write (the client would see a cancelled stream):
    // CouchDB gets an error line instead, as for an answer the worker refused to build.
    const bool exit = output.exit();
    output.Clear();
    output.add_lines(ErrorLine(
        "too_large", absl::StrCat("cnp-server: the answer would be larger than the ",
                                  max_answer_bytes_, " bytes a call may carry (cnp-server's "
                                  "--max-call-bytes): emit or log less per document, or raise "
                                  "the flag")));
    output.set_exit(exit || protocol_.list_in_progress());
  }
  co_return std::move(output);
}

asio::awaitable<void> AsyncQuerySession::Close() {
  LetKeptWorkerGo();
  StopIdleListWatch();
  co_await Drive(protocol_.Close());
}

void AsyncQuerySession::StartIdleListWatch() {
  if (lease_ == nullptr || !protocol_.list_in_progress() || !executor_.has_value() ||
      list_idle_limit_ == absl::InfiniteDuration()) {
    return;
  }
  // Whichever comes first: the idle limit, or the list's end in all (its rows together).
  absl::Duration wait = list_idle_limit_;
  bool list_over = false;
  if (const absl::Duration left = protocol_.list_ends_by() - absl::Now(); left <= wait) {
    wait = std::max(left, absl::ZeroDuration());
    list_over = true;
  }
  idle_list_watch_ = std::make_shared<IdleListWatch>(this, *executor_, list_over);
  idle_list_watch_->timer.expires_after(absl::ToChronoNanoseconds(wait));
  asio::co_spawn(*executor_, WatchIdleList(idle_list_watch_), asio::detached);
}

void AsyncQuerySession::StopIdleListWatch() {
  if (idle_list_watch_ == nullptr) return;
  idle_list_watch_->session = nullptr;
  idle_list_watch_->timer.cancel();
  idle_list_watch_.reset();
}

asio::awaitable<void> AsyncQuerySession::WatchIdleList(std::shared_ptr<IdleListWatch> watch) {
  asio::error_code ignored;  // cancelled: `session` is null then
  co_await watch->timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  // On the session's executor, like every Handle: the session is gone or has moved on when
  // it let go of the watch, and then nothing is left to do.
  if (watch->session != nullptr) watch->session->EndIdleList(watch->list_over);
}

void AsyncQuerySession::EndIdleList(bool list_over) {
  idle_list_watch_.reset();
  if (list_over) {
    protocol_.ListRanOutOfTime();
    LogWarning("a CouchDB list ran for ", absl::FormatDuration(list_idle_limit_),
               " (--call-timeout) in all: ending it, so that its worker serves other calls");
  } else {
    protocol_.ListEndedForIdleness(list_idle_limit_);
    LogWarning("a CouchDB list waited ", absl::FormatDuration(list_idle_limit_),
               " (--call-timeout) for its next row: ending it, so that its worker serves other "
               "calls");
  }
  EndListInBackground(std::move(lease_), absl::Now() + std::max(CallBudget(), absl::Seconds(1)));
}

asio::awaitable<bool> AsyncQuerySession::Drive(QueryProtocol::Step step) {
  while (const auto* run = std::get_if<QueryProtocol::RunTask>(&step)) {
    if (run->reply_unread && run->on == QueryProtocol::On::kLease && lease_ != nullptr &&
        executor_.has_value()) {
      // A list left behind (a reset in the middle of it): its worker gets the end of its rows
      // on a coroutine of its own, and is replaced if the function does not return by the
      // deadline; the session answers, and serves the next command on another worker, now.
      EndListInBackground(std::move(lease_), run->deadline);
      step = protocol_.Resume(absl::CancelledError("the list was left to end in the background"));
      continue;
    }
    absl::StatusOr<worker::v1::Reply> reply = co_await Run(*run);
    // The protocol still takes the failure, so that its state stays whole (a session that
    // goes on, as in tests, answers with the error line); the stream ends instead.
    if (!reply.ok() && IsServerStopping(reply.status()) && cut_by_shutdown_.ok()) {
      cut_by_shutdown_ = reply.status();
    }
    // The copies of the lines sent ahead not logged yet, which came before the reply's own.
    if (early_logs_ != nullptr) early_logs_->LogAttributed();
    if (reply.ok()) {
      // On the stream's coroutine: the log scope names the Session RPC and its peer. Every
      // reply of the session arrives here, so each function error is counted once.
      LogFunctionLines(reply->function_logs());
      CountFunctionErrors(*reply, metrics::CountFunctionError);
    }
    step = protocol_.Resume(std::move(reply));
  }
  if (!protocol_.list_in_progress()) lease_.reset();
  co_return std::get<QueryProtocol::Answer>(step).output;
}

asio::awaitable<absl::StatusOr<worker::v1::Reply>> AsyncQuerySession::Run(
    QueryProtocol::RunTask run) {
  // The runner takes its task by value: a copy of the protocol's (a map_doc's document too).
  if (run.on == QueryProtocol::On::kAnyWorker) co_return co_await RunOnKeptWorker(std::move(run));
  if (run.on == QueryProtocol::On::kNewLease) {
    // The list's worker comes from the pool like any other (with one worker, it is this one).
    LetKeptWorkerGo();
    absl::StatusOr<std::unique_ptr<pool::AsyncWorkerLease>> lease =
        co_await runner_.Lease(run.deadline);
    if (!lease.ok()) co_return lease.status();
    lease_ = *std::move(lease);
  }
  if (early_logs_ == nullptr) co_return co_await lease_->Exchange(*run.task, run.deadline);
  early_logs_->Arm(run.log_restart, run.latest);
  co_return co_await lease_->ExchangeForwardingLogs(*run.task, run.deadline, *early_logs_);
}

asio::awaitable<absl::StatusOr<worker::v1::Reply>> AsyncQuerySession::RunOnKeptWorker(
    QueryProtocol::RunTask run) {
  // Handle() sets executor_ before any line's task runs, and Close() runs none for any worker;
  // should that change, the task runs without keeping a worker rather than crash.
  if (!executor_.has_value()) co_return co_await runner_.Run(*run.task, run.deadline);
  if (!kept_.has_value()) kept_.emplace(runner_, *executor_);
  if (early_logs_ != nullptr) early_logs_->Arm(run.log_restart, run.latest);
  co_return co_await kept_->Run(*run.task, run.deadline, early_logs_.get());
}

void AsyncQuerySession::LetKeptWorkerGo() {
  if (kept_.has_value()) kept_->LetGo();
}

}  // namespace cnp::couchdb
