// One CouchDB query-server session answered by a coroutine: QueryProtocol (the protocol,
// query_protocol.h) driven over the pool's awaitable AsyncTaskRunner, so that the thread that
// awaits an answer is never blocked. It gives the answers QuerySession (the blocking driver)
// gives, line for line. The server's Session stream handler awaits it; during a list it holds
// an AsyncWorkerLease.
//
// The worker that answered a line is kept for the next ones (AsyncTaskRunner::RunAndKeep) when no
// other caller waits for one: CouchDB sends the next line the moment it has the answer, and an
// exchange on a kept worker skips the pool's queue and, answered quickly, the thread hand-overs
// (the remote Session stream's cost per line). Asked for it back, the session gives it back
// once the exchange in progress, if any, is answered (pool/kept_worker.h).
//
// Lines are answered one at a time: await each Handle() before the next. Cancelling the
// awaiting coroutine cancels the task in flight (see async_task_runner.h); the line is then
// answered with an error, as for any other infrastructure failure.
//
// A list holds its leased worker only while CouchDB keeps it busy, and for at most
// Options::max_call_timeout in all (the session sets the protocol's max_list_time to it): when
// no next line comes within max_call_timeout, or the list reaches QueryProtocol::
// list_ends_by() between two rows, a timer on the executor that last awaited Handle ends the
// list (its worker is given the end of its rows and goes back to the pool) and the protocol
// answers the rows that come later as for a list that is gone (QueryProtocol::
// ListEndedForIdleness), or that ran out of time (ListRanOutOfTime: ["error","timeout",..]).
// Otherwise a client could hold every worker of the pool by starting lists and going quiet,
// or by sending their rows a little faster than max_call_timeout. (On a GrpcContext, Asio
// keeps its timers on a thread of its own and hands each expiry to the executor, so the
// timer's work runs on the stream's thread.)
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "asio/steady_timer.hpp"
#include "cnp/v1/functions.pb.h"
#include "service/couchdb/early_log_lines.h"
#include "service/couchdb/query_protocol.h"
#include "service/pool/async_task_runner.h"
#include "service/pool/kept_worker.h"

namespace cnp::couchdb {

class AsyncQuerySession {
 public:
  using Options = QueryProtocol::Options;

  explicit AsyncQuerySession(pool::AsyncTaskRunner& runner) : AsyncQuerySession(runner, {}) {}
  AsyncQuerySession(pool::AsyncTaskRunner& runner, Options options)
      : runner_(runner), list_idle_limit_(options.max_call_timeout),
        max_answer_bytes_(options.max_answer_bytes), protocol_(WithListTime(options)) {}

  AsyncQuerySession(const AsyncQuerySession&) = delete;
  AsyncQuerySession& operator=(const AsyncQuerySession&) = delete;

  // Answers one line CouchDB wrote (without its newline), which must stay valid until the
  // answer: nothing for "reset" (see QueryProtocol::Answer), else exactly one SessionOutput;
  // when its `exit` is set the session is over. `owner`: as QueryProtocol::Handle's.
  asio::awaitable<std::optional<v1::SessionOutput>> Handle(std::string_view line,
                                                           std::string* owner = nullptr);

  // Await before destroying the session when it may be in a list: the list's function is given
  // the end of its rows, so its worker goes back to the pool ready.
  asio::awaitable<void> Close();

  // A session destroyed in a list without Close (its stream's coroutine was cancelled, say)
  // hands the lease to a detached coroutine on the executor that last awaited Handle, which
  // sends the end of rows and then lets the worker go: a destructor cannot await.
  ~AsyncQuerySession();

  absl::Duration CallBudget() const { return protocol_.CallBudget(); }
  // From now on a function's log() lines are written through `writer` as they are made (a
  // client that takes partial outputs), and each restarts its command's deadline, as CouchDB
  // restarts its timeout on each (early_log_lines.h). Call it before the first Handle.
  void WriteLogsEarly(EarlyLogLines::Writer writer) {
    early_writer_ = std::move(writer);
    protocol_.set_logs_restart_deadline(true);
  }
  bool list_in_progress() const { return protocol_.list_in_progress(); }

  // Set when the server's shutdown cut a task of the last Handle (IsServerStopping, an
  // UNAVAILABLE), else OK. The answer Handle built then is an error line the command does not
  // deserve: a Session stream ends with this status instead, and its adapter sends the command
  // again elsewhere (service/rpc/query_session_handler.h).
  const absl::Status& cut_by_shutdown() const { return cut_by_shutdown_; }

 private:
  // Runs steps until the line is answered; false when the answer is nothing (a reset).
  asio::awaitable<bool> Drive(QueryProtocol::Step step);
  asio::awaitable<absl::StatusOr<worker::v1::Reply>> Run(QueryProtocol::RunTask run);
  // A task for any worker: on the kept worker, or run keeping the worker that answers it.
  asio::awaitable<absl::StatusOr<worker::v1::Reply>> RunOnKeptWorker(QueryProtocol::RunTask run);

  void LetKeptWorkerGo();

  // The protocol's options: a whole list bounded by max_call_timeout (see above).
  static Options WithListTime(Options options) {
    options.max_list_time = options.max_call_timeout;
    return options;
  }

  // The timer that ends a list left waiting (see above), and the session it would end: the
  // session lets go of it (session = nullptr) when the next line comes or the session ends,
  // so that a timer whose expiry is already on its way does nothing.
  struct IdleListWatch {
    IdleListWatch(AsyncQuerySession* session, const asio::any_io_executor& executor,
                  bool list_over)
        : session(session), timer(executor), list_over(list_over) {}
    AsyncQuerySession* session;
    asio::steady_timer timer;
    bool list_over;  // the timer expires at the list's end in all, not its idle limit
  };
  static asio::awaitable<void> WatchIdleList(std::shared_ptr<IdleListWatch> watch);
  void StartIdleListWatch();
  void StopIdleListWatch();
  // The watch's timer expired: ends the list and hands the lease to a coroutine that sends the
  // end of rows and then lets the worker go.
  void EndIdleList(bool list_over);
  // Sends the end of rows on `lease` (until `deadline`) in a coroutine of its own, then lets
  // the worker go.
  void EndListInBackground(std::unique_ptr<pool::AsyncWorkerLease> lease, absl::Time deadline);

  pool::AsyncTaskRunner& runner_;
  const absl::Duration list_idle_limit_;
  // The longest answer the stream may send (its message limit): the worker's reply is bounded,
  // but the log lines around it are escaped and wrapped here.
  const int64_t max_answer_bytes_;
  QueryProtocol protocol_;
  std::unique_ptr<pool::AsyncWorkerLease> lease_;  // while a list runs
  std::optional<pool::KeptWorker> kept_;  // on executor_, from the first task (see above)
  std::optional<asio::any_io_executor> executor_;  // of the last Handle, for the destructor
  std::shared_ptr<IdleListWatch> idle_list_watch_;  // while a list waits for CouchDB
  absl::Status cut_by_shutdown_;
  EarlyLogLines::Writer early_writer_;  // WriteLogsEarly's
  std::shared_ptr<EarlyLogLines> early_logs_;  // made with executor_ at the first Handle
};

}  // namespace cnp::couchdb
