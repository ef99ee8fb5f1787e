#include "service/couchdb/query_protocol.h"

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/utf8_text.h"
#include "service/common/absl_view.h"
#include "service/couchdb/error_id.h"
#include "service/couchdb/json_text.h"

namespace cnp::couchdb {

namespace {

// A validate_doc_update or list call reads at most four of its arguments (new_doc, old_doc,
// user_ctx, sec_obj; head, req): more are walked, not kept.
constexpr size_t kDesignArgumentsRead = 4;

// What a map function name kept in a session costs beside its bytes (a protobuf string's
// allocation and the repeated field's pointer), counted against the shared design budget.
constexpr size_t kFunctionNameOverhead = 64;

using worker::v1::Failure;
using worker::v1::Reply;
using worker::v1::Task;
using Step = QueryProtocol::Step;
using Answer = QueryProtocol::Answer;

// A map_doc's document (from a line the caller gives up) and a map's rows at least this long
// are moved, not copied; shorter ones are copied into buffers kept from line to line, which
// costs no allocation.
constexpr size_t kMovedBytes = 64 << 10;

template <typename Strings>
void AddLogLines(const Strings& logs, v1::SessionOutput& out) {
  for (const std::string& message : logs) out.add_lines(LogLine(message));
}

// "KeyError: 'town'", the way couchjs shows a thrown value.
std::string Describe(const v1::FunctionError& error) {
  if (error.message().empty()) return error.type();
  if (error.type().empty()) return error.message();
  return absl::StrCat(error.type(), ": ", error.message());
}

// Which command's exceptions: a map's name the document.
enum class RaisedIn { kMap, kReduce };

// Function by function, as couchjs writes them: each one's log lines, then its exception
// ("function raised exception (...)", with the document's id for a map: "undefined", as
// JavaScript prints it, for a document without one).
void AddLogAndExceptionLines(const google::protobuf::RepeatedPtrField<std::string>& logs,
                             const google::protobuf::RepeatedPtrField<v1::FunctionError>& errors,
                             RaisedIn raised_in, v1::SessionOutput& out) {
  int logged = 0;
  for (const v1::FunctionError& error : errors) {
    const int before = std::clamp(error.logs_before(), logged, logs.size());
    for (; logged < before; ++logged) out.add_lines(LogLine(logs.Get(logged)));
    std::string message = absl::StrCat("function raised exception (", Describe(error), ")");
    if (raised_in == RaisedIn::kMap) {
      absl::StrAppend(&message, " with doc._id ",
                      error.doc_id().empty() ? "undefined" : error.doc_id());
    }
    out.add_lines(LogLine(message));
  }
  for (; logged < logs.size(); ++logged) out.add_lines(LogLine(logs.Get(logged)));
}

// An infrastructure failure as an error line. Never an empty result: CouchDB must fail the
// request (and retry the index update later) rather than take "nothing emitted" for an answer.
std::string InfrastructureErrorLine(const absl::Status& status) {
  return ErrorLine(InfrastructureErrorId(status), absl::StrCat("cnp-server: ", status.message()));
}

// A whole-task failure that is the user's (bad name, refused module, version mismatch), with
// couch-named-python's error ids, and the function it is about in front of its message.
std::string FailureLine(const Failure& failure) {
  std::string_view id;
  switch (failure.code()) {
    case Failure::BAD_NAME:
      id = "compile_func_name";
      break;
    case Failure::NOT_FOUND:
    case Failure::PERMISSION_DENIED:
    case Failure::VERSION_MISMATCH:
      id = "compile_load";
      break;
    case Failure::BAD_INPUT:
      id = "bad_input";
      break;
    case Failure::ANSWER_TOO_LARGE:
      // As for a line too long to read: CouchDB fails the request (a map_doc's aborts the
      // index update, retried at the next query) rather than index the document as empty.
      id = "too_large";
      break;
    default:
      id = "internal_error";
  }
  // Not a name too long to be one (up to 512 bytes of it come back): its message says so.
  if (failure.function().empty() || failure.function().size() > 200) {
    return ErrorLine(id, failure.message());
  }
  return ErrorLine(id, absl::StrCat(failure.function(), ": ", failure.message()));
}

std::string UnexpectedReplyLine(std::string_view expected) {
  return ErrorLine("internal_error", absl::StrCat("cnp-server: the worker did not answer with a ",
                                                  AbslView(expected)));
}

// The error line of a known command with bad arguments; the session goes on.
std::string BadArgumentsLine(const command::BadArguments& bad) {
  return ErrorLine(bad.error_id, bad.message);
}

// A task's reply the way most commands take it: an infrastructure failure or a whole-task
// Failure becomes the error line to send, and there is nothing else to read (nullptr);
// otherwise the reply's own log lines are in `out` and the reply is returned.
const Reply* Usable(const absl::StatusOr<Reply>& reply, v1::SessionOutput& out) {
  if (!reply.ok()) {
    out.add_lines(InfrastructureErrorLine(reply.status()));
    return nullptr;
  }
  AddLogLines(reply->logs(), out);
  if (reply->has_failure()) {
    out.add_lines(FailureLine(reply->failure()));
    return nullptr;
  }
  return &*reply;
}

// Why a resolved function cannot be a map function, or nothing when it can. An async def
// (with a yield or not) runs none of its body when called, so every document would map to no
// rows: refused at add_fun, which is CouchDB's compile check when a design document is saved,
// rather than building an empty view. A plain generator is how map functions yield.
std::optional<std::string> UnrunnableMapBody(const v1::ResolvedFunction& resolved) {
  std::string_view what;
  switch (resolved.body()) {
    case v1::ResolvedFunction::COROUTINE:
      what = "an async def function returns a coroutine";
      break;
    case v1::ResolvedFunction::ASYNC_GENERATOR:
      what = "an async def function with a yield returns an async generator";
      break;
    default:
      return std::nullopt;
  }
  return absl::StrCat(resolved.function(), ": ", AbslView(what),
                      " without running its body, so as a map function it would emit nothing for "
                      "every document; a map function is a def that yields its rows or calls "
                      "emit() (take out its async)");
}

std::optional<v1::DesignFunctionKind> FunctionKindOf(DesignSection section) {
  switch (section) {
    case DesignSection::kFilters:
      return v1::FILTER;
    case DesignSection::kViews:
      return v1::VIEW_FILTER;
    case DesignSection::kShows:
      return v1::SHOW;
    case DesignSection::kUpdates:
      return v1::UPDATE;
    case DesignSection::kRewrites:
      return v1::REWRITE;
    case DesignSection::kLists:
      return v1::LIST;
    case DesignSection::kValidateDocUpdate:
    case DesignSection::kUnknown:
      break;
  }
  return std::nullopt;
}


}  // namespace

QueryProtocol::Step QueryProtocol::Handle(std::string_view line, std::string* owner) {
  line_owner_ = owner;
  absl::Cleanup forget_owner = [this] { line_owner_ = nullptr; };
  last_line_bytes_ = line.size();
  output_.Clear();  // keeps its strings' buffers for this answer
  ran_out_of_memory_ = false;
  filter_batch_ = false;
  // In a list, any line but a row ends it with a reason that names what the line is, so the line
  // is read whole.
  Command command =
      ParseCommand(line, options_.reduce_values_checked_by_worker && !list_open_
                             ? ReduceValues::kLeftToTheWorker
                             : ReduceValues::kChecked);
  // A list the driver ended for idleness: CouchDB is still sending its rows. A query server
  // with no list answers a row as an unknown command and exits (couchjs does so for a row
  // after its list stopped early with ["end",..]; Dispatch answers it the same way); CouchDB
  // then fails the list's request and stops this process, as after any error in a ddoc call,
  // so the client gets an error, never a list cut short that looks whole. The log line first
  // tells CouchDB's log why.
  if (std::string why = std::exchange(list_ended_why_, {}); !why.empty()) {
    if (const CommandKind kind = KindOf(command);
        kind == CommandKind::kListRow || kind == CommandKind::kListEnd) {
      output_.add_lines(LogLine(why));
    }
  }
  // A list the driver ended at list_ends_by_: its next row is answered as a command that ran
  // out of time is on this path (CouchDB fails the request; the session goes on).
  if (std::string timed_out = std::exchange(list_timed_out_line_, {}); !timed_out.empty()) {
    if (const CommandKind kind = KindOf(command);
        kind == CommandKind::kListRow || kind == CommandKind::kListEnd) {
      return Say(std::move(timed_out));
    }
  }
  // A reset is applied even in the middle of a list, which is abandoned: CouchDB sends one there
  // when a _list's HTTP client went away and the process went back to its pool mid-list.
  if (const auto* reset = std::get_if<command::Reset>(&command)) return Reset(*reset);
  // So is a design document taught there: CouchDB 3.4 teaches a process a design document it
  // lacks before the checkout's reset (the fixtures' validate.txt), so the next user of a
  // process left mid-list may send ["ddoc","new",..] first, and a fatal "not a row" answer
  // stopped the process and failed that user's request.
  if (list_open_) {
    if (const auto* taught = std::get_if<command::DesignDocNew>(&command)) {
      return AbandonList(std::get<Answer>(DesignDocNew(*taught)));
    }
    return ContinueList(command, line);
  }
  return Dispatch(command);
}

QueryProtocol::Step QueryProtocol::Resume(absl::StatusOr<Reply>&& reply) {
  // A worker asks to be replaced after a MemoryError (worker.proto's `recycle`). What the
  // MemoryError cost is unknown - a map's rows may be missing, and an empty row means "this
  // document emits nothing" to CouchDB for good - so the answer is an error, which has CouchDB
  // try again, as a direct session's answer is (service/worker/direct_session.cc).
  // A worker replaced because a function's threads outlived its call answered in full.
  if (reply.ok() && reply->recycle() && !reply->threads_left_running()) ran_out_of_memory_ = true;
  // Taken out first: the continuation may ask for another task, and so set then_ again.
  Continuation then = std::move(then_);
  Step step = Answer{};
  if (absl::IsDeadlineExceeded(reply.status()) && !list_exchange_ends_with_list_) {
    // The pool says what ran out (a wait for a worker, a function that ran on); the session
    // adds whose deadline it was and the setting that raises it.
    absl::StatusOr<Reply> told = BudgetExceeded(reply.status());
    step = then(told);
  } else {
    step = then(reply);
  }
  if (ran_out_of_memory_ && std::holds_alternative<Answer>(step)) {
    ran_out_of_memory_ = false;
    if (std::get<Answer>(step).output && output_.lines_size() > 0) {
      output_.mutable_lines()->RemoveLast();
      output_.set_accepted(false);  // an error is no `true` a new stream must be taught again
      output_.add_lines(ErrorLine(
          "memory_error",
          "cnp-server: MemoryError: the command asked for more memory than the worker could get "
          "(one allocation too large, or its cap, --worker-memory-mb, reached); the worker "
          "is being replaced"));
      // A list's step is lost with it: the list cannot go on (its worker is replaced).
      if (list_open_) output_.set_exit(true);
    }
  }
  return step;
}

QueryProtocol::Step QueryProtocol::Close() {
  output_.Clear();
  if (list_open_) return AbandonList(Answer{.output = false});
  return Answer{.output = false};
}

QueryProtocol::Step QueryProtocol::Run(const Task& task, On on, Continuation then) {
  then_ = std::move(then);
  const absl::Time now = absl::Now();
  absl::Time deadline = now + CallBudget();
  absl::Time latest = now + options_.max_call_timeout;
  list_exchange_ends_with_list_ = false;
  if (on != On::kAnyWorker) {
    // No exchange of a list runs past the list's own end.
    if (list_ends_by_ < deadline) {
      deadline = list_ends_by_;
      list_exchange_ends_with_list_ = true;
    }
    latest = std::min(latest, list_ends_by_);
    list_deadline_ = deadline;
  }
  const absl::Duration timeout = config_.timeout.value_or(options_.default_timeout);
  const absl::Duration couchdb_budget = timeout - std::min(options_.deadline_margin, timeout / 2);
  command_latest_ = latest;
  return RunTask{.task = &task, .on = on, .deadline = deadline, .log_restart = couchdb_budget,
                 .latest = latest};
}

void QueryProtocol::ReleaseLargeBuffers() {
  constexpr size_t kKeptBytes = size_t{1} << 20;
  // Only a large line grows the tasks past what small ones need: the per-document path of a
  // direct session pays one comparison.
  if (last_line_bytes_ <= kKeptBytes) return;
  if (map_task_.map().docs(0).capacity() > kKeptBytes) {
    std::string().swap(*map_task_.mutable_map()->mutable_docs(0));
  }
  // An open list's task is still its own.
  if (!list_open_ && task_.SpaceUsedLong() > kKeptBytes) task_ = Task();
}

void QueryProtocol::NewTask() {
  task_.Clear();
  if (options_.max_answer_bytes > 0) task_.set_max_answer_bytes(options_.max_answer_bytes);
}

QueryProtocol::Step QueryProtocol::Say(std::string line) {
  output_.add_lines(std::move(line));
  return Answer{};
}

QueryProtocol::Step QueryProtocol::SayAndExit(std::string line) {
  output_.add_lines(std::move(line));
  output_.set_exit(true);
  return Answer{};
}

QueryProtocol::Step QueryProtocol::Accept() {
  output_.add_lines("true");
  output_.set_accepted(true);
  return Answer{};
}

QueryProtocol::Step QueryProtocol::Dispatch(Command& command) {
  return std::visit(
      [this](auto& c) -> Step {
        using C = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<C, command::MapDoc>) {
          return MapDoc(c.doc);
        } else if constexpr (std::is_same_v<C, command::Reset>) {
          return Reset(c);
        } else if constexpr (std::is_same_v<C, command::AddLib>) {
          // Accepted and not kept: named functions never read the views' library, and a copy
          // held until the next reset let a peer make the server hold a message's worth of
          // memory per stream for nothing.
          return Accept();
        } else if constexpr (std::is_same_v<C, command::AddFun>) {
          return AddFun(c);
        } else if constexpr (std::is_same_v<C, command::Reduce>) {
          return Reduce(c);
        } else if constexpr (std::is_same_v<C, command::DesignDocNew>) {
          return DesignDocNew(c);
        } else if constexpr (std::is_same_v<C, command::DesignDocCall>) {
          return DesignDocCall(c);
        } else if constexpr (std::is_same_v<C, command::Unknown>) {
          return SayAndExit(
              ErrorLine("unknown_command", absl::StrCat("unknown command '", Excerpt(c.name, 256), "'")));
        } else if constexpr (std::is_same_v<C, command::NotACommand>) {
          return SayAndExit(FatalLine("query_protocol_error", c.reason));
        } else if constexpr (std::is_same_v<C, command::BadArguments>) {
          if (c.kind != CommandKind::kListRow) return Say(BadArgumentsLine(c));
          return SayAndExit(ErrorLine("unknown_command", "unknown command 'list_row'"));
        } else {
          // list_row or list_end with no list running: commands couchjs does not know then.
          static_assert(std::is_same_v<C, command::ListRow> || std::is_same_v<C, command::ListEnd>);
          constexpr bool kRow = std::is_same_v<C, command::ListRow>;
          return SayAndExit(ErrorLine("unknown_command", kRow ? "unknown command 'list_row'"
                                                              : "unknown command 'list_end'"));
        }
      },
      command);
}

void QueryProtocol::ReleaseFunctionNames() {
  if (options_.design_docs.shared != nullptr) {
    options_.design_docs.shared->Release(function_names_charged_);
  }
  function_names_charged_ = 0;
}

QueryProtocol::Step QueryProtocol::Reset(const command::Reset& reset) {
  config_ = reset.config;
  map_task_.mutable_map()->clear_functions();
  ReleaseFunctionNames();
  if (list_open_) return AbandonList(Answer{.output = false});
  return Answer{.output = false};
}

absl::Duration QueryProtocol::CallBudget() const {
  const absl::Duration timeout = config_.timeout.value_or(options_.default_timeout);
  const absl::Duration margin = std::min(options_.deadline_margin, timeout / 2);
  return std::min(timeout - margin, options_.max_call_timeout);
}

absl::Status QueryProtocol::BudgetExceeded(const absl::Status& status) const {
  std::string note = ServerCapNote();
  if (note.empty() && logs_restart_deadline_ && absl::Now() >= command_latest_ - kCapSlack) {
    // The function's log() lines kept CouchDB waiting, until the server's cap on a command.
    note = absl::StrCat(" (its log() lines restarted CouchDB's timeout, but ",
                        options_.call_timeout_setting, ", ",
                        absl::FormatDuration(options_.max_call_timeout),
                        ", caps every command: raise it for commands that need longer)");
  } else if (note.empty()) {
    const absl::Duration timeout = config_.timeout.value_or(options_.default_timeout);
    const absl::Duration margin = std::min(options_.deadline_margin, timeout / 2);
    note = absl::StrCat(
        " (the deadline was CouchDB's timeout, ", absl::ToInt64Milliseconds(timeout), " ms",
        config_.timeout.has_value() ? " from its reset" : " by default as no reset gave one",
        ", less ", absl::ToInt64Milliseconds(margin), " ms for the answer to reach CouchDB",
        logs_restart_deadline_
            ? ", from the command's start or its functions' last log() line, which restarts "
              "it as it restarts CouchDB's"
            : "; over this stream a function's log() lines come with its answer and do not "
              "extend it",
        ". CouchDB's os_process_timeout sets it, for commands that need longer)");
  }
  return absl::Status(status.code(), absl::StrCat(status.message(), note));
}

std::string QueryProtocol::ServerCapNote() const {
  const absl::Duration timeout = config_.timeout.value_or(options_.default_timeout);
  const absl::Duration margin = std::min(options_.deadline_margin, timeout / 2);
  if (options_.max_call_timeout >= timeout - margin) return {};
  return absl::StrCat(" (", options_.call_timeout_setting, ", ",
                      absl::FormatDuration(options_.max_call_timeout),
                      ", caps every command and is shorter than CouchDB's timeout, ",
                      absl::ToInt64Milliseconds(timeout),
                      " ms: raise it to match CouchDB's os_process_timeout)");
}

void QueryProtocol::ListEndedForIdleness(absl::Duration idle) {
  if (!list_open_) return;
  list_open_ = false;
  list_ended_why_ = absl::StrCat(
      "cnp-server: the list function was ended after CouchDB sent no row for ",
      absl::FormatDuration(idle), " (", options_.call_timeout_setting,
      "), so that its worker could "
      "serve other calls");
}

void QueryProtocol::ListRanOutOfTime() {
  if (!list_open_) return;
  list_open_ = false;
  list_timed_out_line_ = ListTimeoutLine();
}

std::string QueryProtocol::ListTimeoutLine() const {
  return ErrorLine(
      "timeout",
      absl::StrCat("cnp-server: the list ran for ", absl::FormatDuration(options_.max_list_time),
                   " in all (", options_.call_timeout_setting,
                   "), the longest one list may hold a worker; its function was given the end "
                   "of its rows, so that its worker could serve other calls (raise that "
                   "setting for longer lists)"));
}

absl::Time QueryProtocol::CallDeadline() const { return absl::Now() + CallBudget(); }

QueryProtocol::Step QueryProtocol::AddFun(const command::AddFun& add_fun) {
  if (map_task_.map().functions_size() >= kMaxMapFunctions) {
    return Say(ErrorLine(
        "too_many_functions",
        absl::StrCat("cnp-server: this session holds ", kMaxMapFunctions,
                     " map functions already (add_fun since the last reset), the most one "
                     "session may; split the design document's views into several design "
                     "documents")));
  }
  NewTask();
  task_.mutable_resolve()->add_functions(add_fun.function);
  // Every map_doc will load the name with its version checked: check it so now.
  task_.set_versions_as_run(true);
  return Run(task_, On::kAnyWorker, [this](const absl::StatusOr<Reply>& reply) -> Step {
    if (!reply.ok()) return Say(InfrastructureErrorLine(reply.status()));
    AddLogLines(reply->logs(), output_);
    if (reply->has_failure()) {
      return Say(ErrorLine("compilation_error", reply->failure().message()));
    }
    if (!reply->has_resolve() || reply->resolve().functions_size() != 1) {
      return Say(UnexpectedReplyLine("resolve reply"));
    }
    const v1::ResolvedFunction& resolved = reply->resolve().functions(0);
    if (!resolved.error().empty()) return Say(ErrorLine("compilation_error", resolved.error()));
    if (std::optional<std::string> why = UnrunnableMapBody(resolved)) {
      return Say(ErrorLine("compilation_error", *why));
    }
    // A worker that ran out of memory importing it: Resume answers the memory error instead,
    // and the session does not keep what CouchDB was not told it has.
    if (ran_out_of_memory_) return Accept();
    // The name, and what a protobuf string holds beside it.
    const std::string& name = task_.resolve().functions(0);
    const size_t bytes = name.size() + kFunctionNameOverhead;
    if (DesignDocBudget* shared = options_.design_docs.shared;
        shared != nullptr && !shared->TryCharge(bytes)) {
      return Say(ErrorLine(
          "query_protocol_error",
          absl::StrCat("cnp-server: the server's Session streams hold ", shared->used(),
                       " of the ", shared->limit(), " bytes of design documents and map "
                       "function names they may hold together (cnp-server's "
                       "--max-session-design-memory); this function is not added")));
    }
    function_names_charged_ += bytes;
    map_task_.mutable_map()->add_functions(name);
    return Accept();
  });
}

QueryProtocol::Step QueryProtocol::MapDoc(std::string_view doc) {
  if (map_task_.map().functions().empty()) return Say("[]");
  TakeDocument(doc, *map_task_.mutable_map()->mutable_docs(0));
  return Run(map_task_, On::kAnyWorker,
             [this](absl::StatusOr<Reply>& reply) { return Mapped(reply); });
}

void QueryProtocol::TakeDocument(std::string_view doc, std::string& into) {
  std::string* line = line_owner_;
  // Small documents are copied into the task's buffer, kept from line to line: no allocation.
  if (line == nullptr || doc.size() < kMovedBytes || doc.data() < line->data() ||
      doc.data() + doc.size() > line->data() + line->size()) {
    into.assign(doc.data(), doc.size());
    return;
  }
  const size_t offset = static_cast<size_t>(doc.data() - line->data());
  line->resize(offset + doc.size());
  line->erase(0, offset);
  into.swap(*line);
}

QueryProtocol::Step QueryProtocol::Mapped(absl::StatusOr<Reply>& reply) {
  // The hot path hands the worker everything between "map_doc" and the closing bracket, so
  // a line with arguments after the document (["map_doc",{doc},"extra"]) reached it as one
  // text that is not a document: bad_input, where couchjs maps the document and ignores the
  // rest. Told apart only now, so that no other line pays for it, and mapped again alone.
  if (reply.ok() && reply->has_failure() && reply->failure().code() == Failure::BAD_INPUT) {
    if (std::optional<std::string_view> first =
            DocumentBeforeExtraArguments(map_task_.map().docs(0))) {
      std::string alone(*first);
      map_task_.mutable_map()->mutable_docs(0)->swap(alone);
      return Run(map_task_, On::kAnyWorker,
                 [this](absl::StatusOr<Reply>& again) { return Mapped(again); });
    }
  }
  const Reply* usable = Usable(reply, output_);
  if (usable == nullptr) return Answer{};
  if (!usable->has_map() || usable->map().results_size() != 1 ||
      usable->map().results(0).rows().empty()) {
    return Say(UnexpectedReplyLine("map result"));
  }
  const v1::MapResult& result = usable->map().results(0);
  AddLogAndExceptionLines(result.logs(), result.errors(), RaisedIn::kMap, output_);
  // Into a line's buffer kept from earlier answers: no allocation per document. Large rows
  // are moved instead: a copy would hold them twice while the answer is built.
  std::string& line = *output_.add_lines();
  if (result.rows().size() >= kMovedBytes) {
    line.swap(*reply->mutable_map()->mutable_results(0)->mutable_rows());
  } else {
    line.assign(result.rows());
  }
  return Answer{};
}

QueryProtocol::Step QueryProtocol::Reduce(command::Reduce& reduce) {
  // No functions, no reductions: couchjs answers [true,[]] (its loop over the functions runs
  // no times), and CouchDB takes it as any reduce's answer. No worker is needed for it.
  if (reduce.functions.empty()) return Say("[true,[]]");
  NewTask();
  v1::ReduceRequest& request = *task_.mutable_reduce();
  const int functions = static_cast<int>(reduce.functions.size());
  for (std::string& function : reduce.functions) request.add_functions(std::move(function));
  request.set_rereduce(reduce.rereduce);
  request.set_kvs(reduce.kvs.data(), reduce.kvs.size());
  if (reduce.values_unchecked) task_.mutable_session_line()->set_offset(reduce.values_offset);
  // couchjs measures the line as JavaScript does (JavaScriptLength): every byte a character of
  // the values takes past its UTF-16 units does not count. Only with the limit on: it walks them.
  size_t input_length =
      reduce.line_bytes > reduce.names_bytes ? reduce.line_bytes - reduce.names_bytes : 0;
  if (config_.reduce_limit != QueryConfig::ReduceLimit::kOff) {
    input_length -= std::min(input_length, reduce.kvs.size() - JavaScriptLength(reduce.kvs));
  }

  return Run(task_, On::kAnyWorker,
             [this, functions, input_length](const absl::StatusOr<Reply>& reply) -> Step {
    if (reply.ok() && reply->failure().code() == Failure::BAD_LINE) {
      return SayAndExit(FatalLine("query_protocol_error", reply->failure().message()));
    }
    const Reply* usable = Usable(reply, output_);
    if (usable == nullptr) return Answer{};
    if (!usable->has_reduce() || usable->reduce().results_size() != functions) {
      return Say(UnexpectedReplyLine("reduce result per function"));
    }
    const v1::ReduceResponse& response = usable->reduce();
    AddLogAndExceptionLines(response.logs(), response.errors(), RaisedIn::kReduce, output_);

    std::string reductions = "[";
    for (int i = 0; i < response.results_size(); ++i) {
      if (i > 0) reductions += ',';
      const std::string& result = response.results(i);
      reductions += result.empty() ? std::string_view("null") : std::string_view(result);
    }
    reductions += ']';
    // Its length as couchjs's JSON.stringify(reductions).length: UTF-16 units, not bytes. A
    // text has no more units than bytes, so one within the threshold in bytes skips the walk.
    const size_t output_length = config_.reduce_limit != QueryConfig::ReduceLimit::kOff &&
                                         reductions.size() > config_.reduce_limit_threshold
                                     ? JavaScriptLength(reductions)
                                     : reductions.size();
    if (std::optional<std::string> overflow =
            ReduceOverflow(config_, output_length, input_length)) {
      if (config_.reduce_limit == QueryConfig::ReduceLimit::kOn) {
        return Say(ErrorLine("reduce_overflow_error", *overflow));
      }
      output_.add_lines(LogLine(absl::StrCat("reduce_overflow_error: ", *overflow)));
    }
    return Say(absl::StrCat("[true,", reductions, "]"));
  });
}

QueryProtocol::Step QueryProtocol::DesignDocNew(const command::DesignDocNew& ddoc) {
  if (absl::Status status = design_docs_.Put(ddoc.id, ddoc.doc); !status.ok()) {
    return Say(ErrorLine("query_protocol_error", StdView(status.message())));
  }
  return Accept();
}

QueryProtocol::Step QueryProtocol::DesignDocCall(const command::DesignDocCall& call) {
  if (!design_docs_.Contains(call.id)) {
    return SayAndExit(
        FatalLine("query_protocol_error", absl::StrCat("uncached design doc: ", call.id)));
  }
  if (call.path.empty()) {
    return SayAndExit(FatalLine(
        "query_protocol_error", "a ddoc call needs a function path such as [\"filters\",\"name\"]"));
  }
  const std::string& section = call.path.front();
  if (call.section == DesignSection::kUnknown) {
    return SayAndExit(
        FatalLine("unknown_command", absl::StrCat("unknown ddoc command '", section, "'")));
  }
  std::optional<std::string> function = design_docs_.FindFunction(call.id, call.path);
  if (!function.has_value()) {
    return Say(ErrorLine("not_found", absl::StrCat("missing ", section, " function ",
                                                   call.path.back(), " on design doc ", call.id)));
  }
  filter_batch_ = call.section == DesignSection::kFilters;
  if (call.section == DesignSection::kValidateDocUpdate) return Validate(*function, call.args);
  if (call.section == DesignSection::kLists) return StartList(*function, call.args);
  return CallDesignFunction(*FunctionKindOf(call.section), *function, call.args);
}

QueryProtocol::Step QueryProtocol::Validate(std::string_view function, std::string_view args) {
  absl::StatusOr<std::vector<std::string_view>> parts =
      SplitJsonArray(args, kDesignArgumentsRead);
  if (!parts.ok() || parts->empty()) {
    return Say(BadArgumentsLine(
        MissingArguments(CommandKind::kDesignDocCall, "validate_doc_update")));
  }
  NewTask();
  v1::ValidateRequest& request = *task_.mutable_validate();
  request.set_function(std::string(function));
  request.set_new_doc((*parts)[0].data(), (*parts)[0].size());
  if (parts->size() > 1) request.set_old_doc((*parts)[1].data(), (*parts)[1].size());
  if (parts->size() > 2) request.set_user_ctx((*parts)[2].data(), (*parts)[2].size());
  if (parts->size() > 3) request.set_sec_obj((*parts)[3].data(), (*parts)[3].size());

  return Run(task_, On::kAnyWorker, [this](const absl::StatusOr<Reply>& reply) -> Step {
    const Reply* usable = Usable(reply, output_);
    if (usable == nullptr) return Answer{};
    if (!usable->has_validate()) return Say(UnexpectedReplyLine("validate result"));
    const v1::ValidateResponse& response = usable->validate();
    AddLogLines(response.logs(), output_);
    std::string line;
    switch (response.outcome()) {
      case v1::ValidateResponse::OK:
        line = "1";
        break;
      case v1::ValidateResponse::FORBIDDEN:
      case v1::ValidateResponse::UNAUTHORIZED:
        line = response.outcome() == v1::ValidateResponse::FORBIDDEN ? "{\"forbidden\":"
                                                                     : "{\"unauthorized\":";
        // A value raised that is not a str goes as JSON, as couchjs sends a thrown object.
        if (response.message_json().empty()) {
          AppendJsonString(line, response.message());
        } else {
          line += response.message_json();
        }
        line += '}';
        break;
      case v1::ValidateResponse::NOT_FOUND:
        // As couchjs answers a thrown ["error","not_found",msg]: CouchDB's 404.
        line = ErrorLine("not_found", response.message());
        break;
      case v1::ValidateResponse::ERROR: {
        const std::string& type = response.error().type();
        line = ErrorLine(type.empty() ? "validation_error" : type,
                         response.error().message().empty() ? response.message()
                                                            : response.error().message());
        break;
      }
      default:
        line = UnexpectedReplyLine("validate outcome");
    }
    return Say(std::move(line));
  });
}

QueryProtocol::Step QueryProtocol::CallDesignFunction(v1::DesignFunctionKind kind,
                                                      std::string_view function,
                                                      std::string_view args) {
  NewTask();
  v1::DesignFunctionRequest& request = *task_.mutable_design();
  request.set_kind(kind);
  request.set_function(std::string(function));
  request.set_args(args.data(), args.size());

  return Run(task_, On::kAnyWorker, [this](const absl::StatusOr<Reply>& reply) -> Step {
    const Reply* usable = Usable(reply, output_);
    if (usable == nullptr) return Answer{};
    if (!usable->has_design() || usable->design().reply().empty()) {
      return Say(UnexpectedReplyLine("design function reply"));
    }
    AddLogLines(usable->design().logs(), output_);
    return Say(usable->design().reply());
  });
}

QueryProtocol::Step QueryProtocol::StartList(std::string_view function, std::string_view args) {
  absl::StatusOr<std::vector<std::string_view>> parts =
      SplitJsonArray(args, kDesignArgumentsRead);
  if (!parts.ok() || parts->empty()) {
    return Say(BadArgumentsLine(MissingArguments(CommandKind::kDesignDocCall, "lists")));
  }
  NewTask();
  worker::v1::ListStart& start = *task_.mutable_list_start();
  start.set_function(std::string(function));
  start.set_head((*parts)[0].data(), (*parts)[0].size());
  if (parts->size() > 1) {
    start.set_req((*parts)[1].data(), (*parts)[1].size());
  } else {
    start.set_req("{}");
  }
  // Open from here: a lease that cannot be had is the list's first (and last) step failing.
  list_open_ = true;
  list_ends_by_ = options_.max_list_time == absl::InfiniteDuration()
                      ? absl::InfiniteFuture()
                      : absl::Now() + options_.max_list_time;
  return Run(task_, On::kNewLease,
             [this](const absl::StatusOr<Reply>& reply) { return StepList(reply); });
}

QueryProtocol::Step QueryProtocol::ContinueList(const Command& command, std::string_view line) {
  NewTask();
  const bool row_or_end = std::holds_alternative<command::ListRow>(command) ||
                          std::holds_alternative<command::ListEnd>(command);
  if (row_or_end && absl::Now() >= list_ends_by_) {
    // Past the list's end before its driver ended it: as if it had.
    Say(ListTimeoutLine());
    return AbandonList(Answer{});
  }
  if (const auto* row = std::get_if<command::ListRow>(&command)) {
    task_.mutable_list_row()->set_row(row->row.data(), row->row.size());
  } else if (std::holds_alternative<command::ListEnd>(command)) {
    task_.mutable_list_row();  // an empty row is the end of rows
  } else {
    // couchjs names the command; a line that is not even a command is quoted, shortened.
    std::string what;
    if (const auto* unknown = std::get_if<command::Unknown>(&command)) {
      what = unknown->name;
    } else if (std::holds_alternative<command::NotACommand>(command)) {
      what = std::string(Utf8Prefix(AbslView(TrimJsonText(line)), 100));
    } else {
      what = std::string(CommandName(KindOf(command)));
    }
    SayAndExit(FatalLine("list_error", absl::StrCat("not a row '", Excerpt(what, 256), "'")));
    return AbandonList(Answer{});
  }
  return Run(task_, On::kLease,
             [this](const absl::StatusOr<Reply>& reply) { return StepList(reply); });
}

QueryProtocol::Step QueryProtocol::StepList(const absl::StatusOr<Reply>& reply) {
  bool finished = true;
  if (list_exchange_ends_with_list_ && absl::IsDeadlineExceeded(reply.status())) {
    // The list's own end, not the command's budget, cut this step (its worker is replaced).
    output_.add_lines(ListTimeoutLine());
  } else if (const Reply* usable = Usable(reply, output_); usable != nullptr) {
    if (!usable->has_list_step() || usable->list_step().reply().empty()) {
      output_.add_lines(UnexpectedReplyLine("list step"));
    } else {
      // The function returned or raised (its error is then the reply): the list is over.
      finished = usable->list_step().done();
      output_.add_lines(usable->list_step().reply());
    }
  }
  // Over after a failed exchange too: the lease replaces its worker.
  if (finished) list_open_ = false;
  return Answer{};
}

QueryProtocol::Step QueryProtocol::AbandonList(Answer then) {
  list_open_ = false;
  NewTask();
  task_.mutable_list_row();  // the end of rows
  then_ = [then](const absl::StatusOr<Reply>&) -> Step { return then; };
  return RunTask{&task_, On::kLease, std::max(list_deadline_, absl::Now() + absl::Seconds(1)),
                 /*reply_unread=*/true};
}

}  // namespace cnp::couchdb
