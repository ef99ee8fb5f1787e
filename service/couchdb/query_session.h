// One CouchDB query-server session answered with blocking calls: QueryProtocol (the protocol,
// query_protocol.h) driven over a synchronous pool::TaskRunner, each line answered on the
// caller's thread. The worker's direct session runs it over its InProcessRunner; the server's
// coroutines use AsyncQuerySession instead, which gives the same answers.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cnp/v1/functions.pb.h"
#include "service/couchdb/query_protocol.h"
#include "service/pool/task_runner.h"

namespace cnp::couchdb {

class QuerySession {
 public:
  using Options = QueryProtocol::Options;

  // Where the session's function errors go (service/common/function_errors.h): a direct
  // session's tally for the server's metric; nowhere when empty.
  using FunctionErrors = std::function<void(absl::string_view function)>;

  explicit QuerySession(pool::TaskRunner& runner) : QuerySession(runner, Options()) {}
  QuerySession(pool::TaskRunner& runner, Options options, FunctionErrors function_errors = {});
  // An open list is given the end of its rows first, so its worker goes back ready.
  ~QuerySession();

  QuerySession(const QuerySession&) = delete;
  QuerySession& operator=(const QuerySession&) = delete;

  // Answers one line CouchDB wrote (without its newline): nothing for "reset" (see
  // QueryProtocol::Answer), else exactly one SessionOutput; when its `exit` is set the session
  // is over.
  std::optional<v1::SessionOutput> Handle(std::string_view line);
  // The same answer in place, for the hot path: valid (and the caller's to change) until the
  // next call, its buffers reused from line to line; nullptr for a reset.
  v1::SessionOutput* HandleInPlace(std::string_view line);

  absl::Duration CallBudget() const { return protocol_.CallBudget(); }
  std::string ServerCapNote() const { return protocol_.ServerCapNote(); }
  bool list_in_progress() const { return protocol_.list_in_progress(); }
  bool answering_filter_batch() const { return protocol_.answering_filter_batch(); }

 private:
  // Runs steps until the line is answered; false when the answer is nothing (a reset).
  bool Drive(QueryProtocol::Step step);
  absl::StatusOr<worker::v1::Reply> Run(const QueryProtocol::RunTask& run);

  pool::TaskRunner& runner_;
  const FunctionErrors function_errors_;
  QueryProtocol protocol_;
  std::unique_ptr<pool::WorkerLease> lease_;  // while a list runs
};

}  // namespace cnp::couchdb
