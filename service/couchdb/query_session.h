// One CouchDB query-server session: the protocol CouchDB speaks to a query-server process
// (reset, add_lib, add_fun, map_doc, reduce, rereduce, ddoc new and the ddoc calls, lists with
// their row exchange), answered by running named Python functions on the worker pool.
//
// The session keeps what couchjs keeps: the configuration from the last reset, the map functions
// added since, the view library, every design document taught to it, and an open list. Each line
// CouchDB writes goes to Handle(), on the caller's thread, which returns the lines to write back:
// any ["log",..] lines first, then the reply.
//
// Failures are told apart the way CouchDB needs:
//  - a user function that raises is data: a log line and [] (map) or null (reduce), or the
//    error CouchDB expects for that call (validate, shows, ...);
//  - an infrastructure failure (worker crashed, deadline passed, pool unavailable) is never an
//    empty result: it is an ["error",..] line, so CouchDB fails the request and retries later
//    instead of indexing a document as if its functions emitted nothing;
//  - a broken protocol (not JSON, an unknown command, an uncached design document) is answered
//    the way couchjs answers it, and marks the output `exit`.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "cnp/v1/functions.pb.h"
#include "service/couchdb/design_doc_cache.h"
#include "service/couchdb/query_config.h"
#include "service/pool/task_runner.h"

namespace cnp::couchdb {

class QuerySession {
 public:
  struct Options {
    // The call deadline before CouchDB's first reset tells its timeout.
    absl::Duration default_timeout = absl::Seconds(5);
    // Every call must be answered this much before CouchDB's own timeout would fire, so that
    // CouchDB reads our error rather than timing out and killing the process. Never more than
    // half the timeout.
    absl::Duration deadline_margin = absl::Milliseconds(500);
  };

  explicit QuerySession(pool::TaskRunner& runner) : QuerySession(runner, Options()) {}
  QuerySession(pool::TaskRunner& runner, Options options);
  ~QuerySession();

  QuerySession(const QuerySession&) = delete;
  QuerySession& operator=(const QuerySession&) = delete;

  // Answers one line CouchDB wrote (without its newline).
  //
  // Returns nothing for "reset": the caller (cnp-adapter) has already answered it with `true`,
  // so no SessionOutput must be sent, but the reset is applied here (new configuration, map
  // functions and library cleared, design documents kept). Every other line gets exactly one
  // SessionOutput; when its `exit` is set the session is over (couchjs would exit here).
  std::optional<v1::SessionOutput> Handle(std::string_view line);

  // True when `line` is a "reset" command, which Handle() answers with nothing. Cheap: for
  // callers that must decide whether to wait for an answer.
  static bool IsReset(std::string_view line);

  // How long a command may run from now on: CouchDB's timeout (from the last reset, else the
  // default) less the margin. A caller that cannot bound its calls with deadlines (a direct
  // session in the worker) enforces this itself.
  absl::Duration CallBudget() const;

  // A list function is waiting for CouchDB's next list_row or list_end.
  bool list_in_progress() const { return list_ != nullptr; }

 private:
  class ListInProgress;
  using Elements = std::vector<std::string_view>;

  v1::SessionOutput Dispatch(std::string_view line);
  void Reset(const Elements& command);
  v1::SessionOutput AddFun(const Elements& command);
  v1::SessionOutput MapDoc(std::string_view doc);
  v1::SessionOutput Reduce(const Elements& command, bool rereduce, size_t line_bytes);
  v1::SessionOutput DesignDoc(const Elements& command);
  v1::SessionOutput Validate(std::string_view function, std::string_view args);
  v1::SessionOutput CallDesignFunction(v1::DesignFunctionKind kind, std::string_view function,
                                       std::string_view args);
  v1::SessionOutput StartList(std::string_view function, std::string_view args);
  v1::SessionOutput ContinueList(std::string_view line);
  v1::SessionOutput StepList(const pool::Task& task);

  // The deadline for a call starting now, from CouchDB's timeout.
  absl::Time CallDeadline() const;
  // Runs `task` before the deadline and adds its log lines to `out`. On an infrastructure
  // failure or a whole-task Failure, `out` holds the error line to send and there is no reply.
  std::optional<pool::Reply> RunTask(const pool::Task& task, v1::SessionOutput& out);

  pool::TaskRunner& runner_;
  const Options options_;
  QueryConfig config_;
  // The map functions added since the last reset, as a map task with one document slot that
  // every map_doc reuses.
  pool::Task map_task_;
  std::string lib_;  // the views.lib object from add_lib; named functions do not read it
  DesignDocCache design_docs_;
  std::unique_ptr<ListInProgress> list_;
};

}  // namespace cnp::couchdb
