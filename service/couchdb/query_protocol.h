// One CouchDB query-server session, without I/O: the protocol CouchDB speaks to a query-server
// process (reset, add_lib, add_fun, map_doc, reduce, rereduce, ddoc new and the ddoc calls,
// lists with their row exchange), deciding which worker task answers each line and how its
// reply becomes CouchDB's lines. Running the tasks is the caller's: a driver runs each task the
// protocol asks for and hands back the reply, so the same protocol is served by blocking calls
// (QuerySession: the worker's direct session, over its InProcessRunner) and by coroutines
// (AsyncQuerySession: the server's Session stream, over the pool's AsyncTaskRunner).
//
//   Step step = protocol.Handle(line);
//   while (auto* run = std::get_if<QueryProtocol::RunTask>(&step)) {
//     step = protocol.Resume(<run *run->task where run->on says, before run->deadline>);
//   }
//   if (std::get<QueryProtocol::Answer>(step).output) <write protocol.output()>;
//
// The session keeps what couchjs keeps: the configuration from the last reset, the map functions
// added since (at most kMaxMapFunctions), every design document taught to it, and an open list;
// not the view library (add_lib), which named functions never read. An answer holds any
// ["log",..] lines first, then the reply.
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

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cnp/v1/functions.pb.h"
#include "service/couchdb/command.h"
#include "service/couchdb/design_doc_cache.h"
#include "service/couchdb/query_config.h"
#include "worker.pb.h"

namespace cnp::couchdb {

class QueryProtocol {
 public:
  // The most map functions one session holds (add_fun since the last reset). Each is kept
  // and sent to a worker with every map_doc, so without a bound a peer's add_fun lines made
  // the server hold memory without end; CouchDB sends one per view of a design document, far
  // fewer. It is also as many names as a worker's name cache keeps (function_registry.cc):
  // more would make every map_doc load them all again. (common/call_limit.h: the same bound
  // for a reduce line and for a gRPC call.)
  static constexpr int kMaxMapFunctions = kMaxFunctionsPerCall;

  struct Options {
    // The call deadline before CouchDB's first reset tells its timeout.
    absl::Duration default_timeout = absl::Seconds(5);
    // Every call must be answered this much before CouchDB's own timeout would fire, so that
    // CouchDB reads our error rather than timing out and killing the process. Never more than
    // half the timeout.
    absl::Duration deadline_margin = absl::Milliseconds(500);
    // The server's --call-timeout: no command runs longer, whatever timeout CouchDB's reset
    // gives (a peer's ["reset",{"timeout":1e308}] must not hold a worker for ever). CouchDB's
    // own timeout still applies when it is the smaller. A driver over the pool also ends a list
    // that waits this long for CouchDB's next row (ListEndedForIdleness).
    absl::Duration max_call_timeout = absl::InfiniteDuration();
    // The longest a whole list may hold its worker, all its rows together (list_ends_by()):
    // a driver over the pool sets it (AsyncQuerySession: max_call_timeout), and ends a list
    // that reaches it between rows (ListRanOutOfTime). A direct session's worker is its own:
    // only each command is bounded there.
    absl::Duration max_list_time = absl::InfiniteDuration();
    // The setting that raises max_call_timeout, as the timeout errors name it: the server's own
    // flag, or the adapter's for a server cnp-adapter started (CallTimeoutSetting).
    std::string call_timeout_setting = std::string(CallTimeoutSetting(false));
    // A reduce line's values are not checked as JSON here but by the worker that builds Python
    // from them, in that same walk (ReduceValues::kLeftToTheWorker, worker.proto's
    // SessionLine), and a broken line comes back as Failure BAD_LINE, answered as a line that
    // is not JSON. Only for a driver whose tasks always reach that worker and come back (a
    // direct session's InProcessRunner): over the pool, a busy or failing pool would answer a
    // broken line with an error line, where it must end the session.
    bool reduce_values_checked_by_worker = false;
    // How much of the design documents CouchDB teaches the session is kept (design_doc_cache.h).
    DesignDocCache::Limits design_docs;
    // The most bytes a worker's answer to one command may have (every task's
    // max_answer_bytes; 0: no bound). Past it the worker stops building the answer and the
    // command is answered ["error","too_large",..]. The server's --max-call-bytes.
    int64_t max_answer_bytes = 0;
  };

  // The line is answered: output() holds the lines to write back, unless `output` is false.
  // No output for "reset": whoever read it has answered it with `true` already (cnp-adapter, a
  // direct session), but the reset is applied (new configuration, map functions cleared,
  // design documents kept). Every other line gets exactly one SessionOutput; when its
  // `exit` is set the session is over (couchjs would exit here).
  struct Answer {
    bool output = true;
  };

  // Where a task must run.
  enum class On {
    kAnyWorker,  // a free worker of the pool
    kNewLease,   // a worker leased now for a list, held while list_in_progress()
    kLease,      // the worker leased for the list in progress
  };
  // The line needs a task's reply: run `*task` and pass the reply (or the infrastructure
  // failure: DEADLINE_EXCEEDED, UNAVAILABLE, RESOURCE_EXHAUSTED, CANCELLED) to Resume(). The task
  // belongs to the protocol and stays valid until then.
  struct RunTask {
    const worker::v1::Task* task;
    On on;
    absl::Time deadline;
    // The end of rows for a list the session has left (a reset, or a line that is not a row):
    // the answer does not wait for its reply, which is not read. A driver that can may hand
    // the lease over to end the list in the background and Resume at once (with any reply),
    // so that CouchDB's next command does not wait for a list function that takes its time.
    bool reply_unread = false;
    // Where each log() line the task's functions make moves `deadline` (a driver that sends the
    // lines to CouchDB as they are made: CouchDB restarts its timeout on each): to the line's
    // time plus `log_restart`, never past `latest` (the server's cap on a command, and a list's
    // end in all).
    absl::Duration log_restart = absl::ZeroDuration();
    absl::Time latest = absl::InfiniteFuture();
  };

  using Step = std::variant<Answer, RunTask>;

  explicit QueryProtocol(Options options) : options_(options), design_docs_(options.design_docs) {
    map_task_.mutable_map()->add_docs();
    if (options.max_answer_bytes > 0) map_task_.set_max_answer_bytes(options.max_answer_bytes);
  }

  // Gives its function names' bytes back to the shared budget.
  ~QueryProtocol() { ReleaseFunctionNames(); }
  QueryProtocol(const QueryProtocol&) = delete;
  QueryProtocol& operator=(const QueryProtocol&) = delete;

  // Starts answering one line CouchDB wrote (without its newline). Nothing of `line` is kept.
  // `owner`, if given, is the string `line` views, which the caller gives up: a large map_doc's
  // document is then moved out of it, not copied (a copy would hold it once more while mapped).
  Step Handle(std::string_view line, std::string* owner = nullptr);
  // Continues with the reply to the last RunTask, which it may take from.
  Step Resume(absl::StatusOr<worker::v1::Reply>&& reply);
  // The answer to the last line, once Handle or Resume returned an Answer with output; valid
  // (and the caller's to change) until the next Handle. Its buffers are reused from line to
  // line, so a driver that writes it out in place allocates nothing per document.
  v1::SessionOutput& output() { return output_; }
  // Once a line is answered: gives back what a big line's task holds (a map_doc's document,
  // a validate's arguments) rather than keeping it for the next lines, so that a session that
  // then goes quiet holds no more than a small one. Small buffers are kept and reused.
  void ReleaseLargeBuffers();
  // Before the session ends: an open list is given the end of its rows (a RunTask on the lease
  // whose reply does not matter), so that its function returns and its worker is ready for
  // other work rather than stuck in get_row(). Then an empty Answer.
  Step Close();

  // How long a command may run from now on: CouchDB's timeout (from the last reset, else the
  // default) less the margin, and never more than max_call_timeout. A caller that cannot bound
  // its calls with deadlines (a direct session in the worker) enforces this itself.
  absl::Duration CallBudget() const;
  // When the server's max_call_timeout, not CouchDB's timeout, bounds CallBudget(): what to add
  // to a timeout's message so that the operator raises the right setting. Else empty.
  std::string ServerCapNote() const;
  // `status`, a DEADLINE_EXCEEDED of the command's budget (CallBudget), with what the session
  // adds: which limit that budget was, and the setting that raises it.
  absl::Status BudgetExceeded(const absl::Status& status) const;

  // The driver has ended the list in progress itself, between two lines: CouchDB sent no row
  // for `idle` (max_call_timeout) while the list held a worker of the pool, and the driver gave
  // that worker the end of its rows. The list is gone: a list_row or list_end that comes now is
  // answered as by a query server that has no list (see Handle), after a log line saying why.
  void ListEndedForIdleness(absl::Duration idle);

  // When the list in progress must be over: its start plus max_list_time (InfiniteFuture
  // without that cap). A list holds its worker for at most that long in all, however CouchDB
  // paces its rows: an exchange runs until this at the latest, and a row that comes later is
  // answered ["error","timeout",..] (the list's function given the end of its rows), as a
  // command that ran out of time is. Otherwise a client that sends a row a little more often
  // than the idle limit held a worker of the pool for as long as it liked.
  absl::Time list_ends_by() const { return list_ends_by_; }
  // The driver has ended the list in progress itself, between two lines, at list_ends_by(),
  // and gave its worker the end of its rows. The list_row or list_end that comes next is
  // answered ["error","timeout",..], which fails CouchDB's request; the session goes on.
  void ListRanOutOfTime();

  // The driver sends each log() line to CouchDB as a function makes it, and restarts the
  // task's deadline on it (RunTask::log_restart): a timeout's message says so.
  void set_logs_restart_deadline(bool on) { logs_restart_deadline_ = on; }

  // A list function is waiting for CouchDB's next list_row or list_end, on the leased worker.
  // When it is false after an Answer, the driver lets its lease go.
  bool list_in_progress() const { return list_open_; }

  // The line being answered is a filters call (a batch of documents). When its query server
  // exits with status 1 and writes no line, CouchDB tries the batch again one document at a
  // time (couch_query_servers:filter_docs), which couchjs relies on when it runs out of memory.
  bool answering_filter_batch() const { return filter_batch_; }

 private:
  using Reply = worker::v1::Reply;
  using Task = worker::v1::Task;
  // What to make of a task's reply.
  // The reply is the continuation's to take from (a large map row is moved, not copied).
  using Continuation = absl::AnyInvocable<Step(absl::StatusOr<Reply>&)>;

  // Clears task_ for the next command's task, its answer bounded (Options::max_answer_bytes).
  void NewTask();
  Step Run(const Task& task, On on, Continuation then);
  // Adds a line to the answer and answers with it (and the session's end).
  Step Say(std::string line);
  Step SayAndExit(std::string line);
  // `true`, for a command that taught the session something (add_lib, add_fun, ddoc new):
  // marked accepted, so that cnp-adapter knows what a new stream must be taught again without
  // reading the line.
  Step Accept();
  Step Dispatch(Command& command);
  Step Reset(const command::Reset& reset);
  Step AddFun(const command::AddFun& add_fun);
  Step MapDoc(std::string_view doc);
  // The document, moved out of line_owner_ when it is large and held there.
  void TakeDocument(std::string_view doc, std::string& into);
  Step Mapped(absl::StatusOr<Reply>& reply);
  Step Reduce(command::Reduce& reduce);
  Step DesignDocNew(const command::DesignDocNew& ddoc);
  Step DesignDocCall(const command::DesignDocCall& call);
  Step Validate(std::string_view function, std::string_view args);
  Step CallDesignFunction(v1::DesignFunctionKind kind, std::string_view function,
                          std::string_view args);
  Step StartList(std::string_view function, std::string_view args);
  Step ContinueList(const Command& command, std::string_view line);
  Step StepList(const absl::StatusOr<Reply>& reply);
  // Gives an open list the end of its rows, then answers `then` (output() as it is).
  Step AbandonList(Answer then);
  // ["error","timeout",..] for a list past list_ends_by_.
  std::string ListTimeoutLine() const;

  // The deadline for a call starting now, from CouchDB's timeout.
  absl::Time CallDeadline() const;

  const Options options_;
  QueryConfig config_;
  // The map functions added since the last reset, as a map task with one document slot that
  // every map_doc reuses.
  Task map_task_;
  std::string* line_owner_ = nullptr;  // Handle's `owner`, while Handle runs
  size_t last_line_bytes_ = 0;  // of the line Handle read last (ReleaseLargeBuffers)
  // The task of any other command in flight (one line is answered at a time).
  Task task_;
  Continuation then_;
  v1::SessionOutput output_;
  DesignDocCache design_docs_;
  bool list_open_ = false;
  // Set by ListEndedForIdleness until the next line: the log line that explains the answer.
  std::string list_ended_why_;
  // Set by ListRanOutOfTime until the next line: the answer to a list_row or list_end.
  std::string list_timed_out_line_;
  absl::Time list_ends_by_ = absl::InfiniteFuture();  // see list_ends_by()
  // The exchange in flight is a list's that list_ends_by_, not the command's budget, bounds.
  bool list_exchange_ends_with_list_ = false;
  // Set by a driver that sends log() lines as they are made and restarts the deadline on each
  // (set_logs_restart_deadline); the latest the last task's deadline could move to.
  bool logs_restart_deadline_ = false;
  absl::Time command_latest_ = absl::InfiniteFuture();
  // How near the latest a deadline that passed is taken for it (timers fire a little late).
  static constexpr absl::Duration kCapSlack = absl::Milliseconds(100);
  absl::Time list_deadline_;  // of the list's last exchange: its end of rows gets at least this
  // A reply to the line being answered asked for its worker to be replaced (see Resume).
  bool ran_out_of_memory_ = false;
  // The bytes of map function names this session holds, charged to the budget its design
  // documents share with every Session stream (options_.design_docs.shared): a stream's 4,096
  // names of up to 512 bytes each are megabytes, and streams are many.
  size_t function_names_charged_ = 0;
  void ReleaseFunctionNames();
  bool filter_batch_ = false;  // see answering_filter_batch()
};

}  // namespace cnp::couchdb
