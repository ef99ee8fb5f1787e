#include "service/couchdb/query_session.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"
#include "service/couchdb/absl_view.h"
#include "service/couchdb/json_text.h"

namespace cnp::couchdb {
namespace {

using pool::Reply;
using pool::Task;
using worker::v1::Failure;

constexpr std::string_view kMapDocPrefix = "[\"map_doc\",";

v1::SessionOutput Lines(std::initializer_list<std::string> lines) {
  v1::SessionOutput out;
  for (const std::string& line : lines) out.add_lines(line);
  return out;
}

v1::SessionOutput Exit(std::string line) {
  v1::SessionOutput out;
  out.add_lines(std::move(line));
  out.set_exit(true);
  return out;
}

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

// An infrastructure failure as an error line. Never an empty result: CouchDB must fail the
// request (and retry the index update later) rather than take "nothing emitted" for an answer.
std::string InfrastructureErrorLine(const absl::Status& status) {
  std::string_view id;
  switch (status.code()) {
    case absl::StatusCode::kDeadlineExceeded:
      id = "timeout";
      break;
    case absl::StatusCode::kUnavailable:
      id = "unavailable";
      break;
    case absl::StatusCode::kResourceExhausted:
      id = "overloaded";
      break;
    default:
      id = "internal_error";
  }
  return ErrorLine(id, absl::StrCat("cnp-server: ", status.message()));
}

// A whole-task failure that is the user's (bad name, refused module, version mismatch), with
// couch-named-python's error ids.
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
    default:
      id = "internal_error";
  }
  return ErrorLine(id, failure.message());
}

std::string UnexpectedReplyLine(std::string_view expected) {
  return ErrorLine("internal_error", absl::StrCat("cnp-server: the worker did not answer with a ",
                                                  AbslView(expected)));
}

// Fatal for the session: a line that is not JSON cannot be trusted to be framed right either.
std::optional<std::string> CheckJson(std::string_view line) {
  rapidjson::MemoryStream stream(line.data(), line.size());
  rapidjson::BaseReaderHandler<> ignore;
  rapidjson::Reader reader;
  rapidjson::ParseResult result = reader.Parse<rapidjson::kParseStopWhenDoneFlag>(stream, ignore);
  if (result.IsError()) {
    return absl::StrCat("invalid JSON at byte ", result.Offset(), ": ",
                        rapidjson::GetParseError_En(result.Code()));
  }
  return std::nullopt;
}

absl::StatusOr<std::vector<std::string_view>> ParseCommand(std::string_view line) {
  if (std::optional<std::string> error = CheckJson(line)) {
    return absl::InvalidArgumentError(*error);
  }
  return SplitJsonArray(line);
}

std::optional<std::string> DecodeString(std::string_view json) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsString()) return std::nullopt;
  return std::string(doc.GetString(), doc.GetStringLength());
}

std::optional<std::vector<std::string>> DecodeStrings(std::string_view json) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsArray()) return std::nullopt;
  std::vector<std::string> strings;
  for (const rapidjson::Value& value : doc.GetArray()) {
    if (!value.IsString()) return std::nullopt;
    strings.emplace_back(value.GetString(), value.GetStringLength());
  }
  return strings;
}

std::string MissingArgument(std::string_view command) {
  return ErrorLine("query_protocol_error",
                   absl::StrCat("'", AbslView(command), "' is missing arguments"));
}

}  // namespace

// A list function holding its worker between CouchDB's list_row/list_end lines.
class QuerySession::ListInProgress {
 public:
  ListInProgress(std::unique_ptr<pool::WorkerLease> lease, absl::Time finish_deadline)
      : lease_(std::move(lease)), finish_deadline_(finish_deadline) {}

  // A list abandoned half-way (a reset, a line that is not a row, the stream ending) is given
  // the end of its rows, so that the function returns and its worker goes back to the pool
  // ready for other work rather than stuck inside get_row().
  ~ListInProgress() {
    if (!open_) return;
    Task end_of_rows;
    end_of_rows.mutable_list_row();
    lease_->Exchange(end_of_rows, std::max(finish_deadline_, absl::Now() + absl::Seconds(1)))
        .IgnoreError();
  }

  absl::StatusOr<Reply> Exchange(const Task& task, absl::Time deadline) {
    finish_deadline_ = deadline;
    return lease_->Exchange(task, deadline);
  }

  // The function returned, or the exchange failed (and the lease replaces the worker).
  void MarkFinished() { open_ = false; }

 private:
  std::unique_ptr<pool::WorkerLease> lease_;
  absl::Time finish_deadline_;
  bool open_ = true;
};

QuerySession::QuerySession(pool::TaskRunner& runner, Options options)
    : runner_(runner), options_(options) {
  map_task_.mutable_map()->add_docs();
}

QuerySession::~QuerySession() = default;

bool QuerySession::IsReset(std::string_view line) {
  line = TrimJsonText(line);
  if (line.empty() || line.front() != '[') return false;
  line = TrimJsonText(line.substr(1));
  if (!line.starts_with("\"reset\"")) return false;
  line.remove_prefix(std::string_view("\"reset\"").size());
  line = TrimJsonText(line);
  return !line.empty() && (line.front() == ',' || line.front() == ']');
}

std::optional<v1::SessionOutput> QuerySession::Handle(std::string_view line) {
  if (IsReset(line)) {
    absl::StatusOr<Elements> command = SplitJsonArray(line);
    Reset(command.ok() ? *command : Elements{});
    return std::nullopt;
  }
  return Dispatch(line);
}

v1::SessionOutput QuerySession::Dispatch(std::string_view line) {
  if (list_ != nullptr) return ContinueList(line);

  line = TrimJsonText(line);
  // The hot path: the document goes to the worker as the very bytes CouchDB wrote.
  if (line.starts_with(kMapDocPrefix) && line.ends_with(']')) {
    return MapDoc(
        TrimJsonText(line.substr(kMapDocPrefix.size(), line.size() - kMapDocPrefix.size() - 1)));
  }

  absl::StatusOr<Elements> command = ParseCommand(line);
  if (!command.ok()) {
    return Exit(FatalLine("query_protocol_error", StdView(command.status().message())));
  }
  std::optional<std::string> name;
  if (!command->empty()) name = DecodeString(command->front());
  if (!name.has_value()) {
    return Exit(FatalLine("query_protocol_error",
                          "expected a command: a JSON array starting with a string"));
  }

  if (*name == "map_doc") {
    if (command->size() < 2) return Lines({MissingArgument(*name)});
    return MapDoc((*command)[1]);
  }
  if (*name == "add_fun") return AddFun(*command);
  if (*name == "add_lib") {
    lib_ = command->size() > 1 ? std::string((*command)[1]) : "{}";
    return Lines({"true"});
  }
  if (*name == "reduce" || *name == "rereduce") {
    return Reduce(*command, *name == "rereduce", line.size());
  }
  if (*name == "ddoc") return DesignDoc(*command);
  return Exit(ErrorLine("unknown_command", absl::StrCat("unknown command '", *name, "'")));
}

void QuerySession::Reset(const Elements& command) {
  config_ = QueryConfig::FromJson(command.size() > 1 ? command[1] : std::string_view());
  map_task_.mutable_map()->clear_functions();
  lib_.clear();
  // CouchDB never resets in the middle of a list; if it does, the list is abandoned.
  list_.reset();
}

absl::Duration QuerySession::CallBudget() const {
  const absl::Duration timeout = config_.timeout.value_or(options_.default_timeout);
  const absl::Duration margin = std::min(options_.deadline_margin, timeout / 2);
  return timeout - margin;
}

absl::Time QuerySession::CallDeadline() const { return absl::Now() + CallBudget(); }

std::optional<Reply> QuerySession::RunTask(const Task& task, v1::SessionOutput& out) {
  absl::StatusOr<Reply> reply = runner_.Run(task, CallDeadline());
  if (!reply.ok()) {
    out.add_lines(InfrastructureErrorLine(reply.status()));
    return std::nullopt;
  }
  AddLogLines(reply->logs(), out);
  if (reply->has_failure()) {
    out.add_lines(FailureLine(reply->failure()));
    return std::nullopt;
  }
  return std::move(*reply);
}

v1::SessionOutput QuerySession::AddFun(const Elements& command) {
  std::optional<std::string> function;
  if (command.size() > 1) function = DecodeString(command[1]);
  if (!function.has_value()) {
    return Lines({ErrorLine("compilation_error", "add_fun expects a function name string")});
  }
  Task task;
  task.mutable_resolve()->add_functions(*function);
  absl::StatusOr<Reply> reply = runner_.Run(task, CallDeadline());
  if (!reply.ok()) return Lines({InfrastructureErrorLine(reply.status())});

  v1::SessionOutput out;
  AddLogLines(reply->logs(), out);
  if (reply->has_failure()) {
    out.add_lines(ErrorLine("compilation_error", reply->failure().message()));
    return out;
  }
  if (!reply->has_resolve() || reply->resolve().functions_size() != 1) {
    out.add_lines(UnexpectedReplyLine("resolve reply"));
    return out;
  }
  const v1::ResolvedFunction& resolved = reply->resolve().functions(0);
  if (!resolved.error().empty()) {
    out.add_lines(ErrorLine("compilation_error", resolved.error()));
    return out;
  }
  map_task_.mutable_map()->add_functions(*function);
  out.add_lines("true");
  return out;
}

v1::SessionOutput QuerySession::MapDoc(std::string_view doc) {
  if (map_task_.map().functions().empty()) return Lines({"[]"});
  map_task_.mutable_map()->mutable_docs(0)->assign(doc.data(), doc.size());
  v1::SessionOutput out;
  std::optional<Reply> reply = RunTask(map_task_, out);
  if (!reply.has_value()) return out;
  if (!reply->has_map() || reply->map().results_size() != 1 ||
      reply->map().results(0).rows().empty()) {
    out.add_lines(UnexpectedReplyLine("map result"));
    return out;
  }
  const v1::MapResult& result = reply->map().results(0);
  AddLogLines(result.logs(), out);
  for (const v1::FunctionError& error : result.errors()) {
    std::string message = absl::StrCat("function raised exception (", Describe(error), ")");
    if (!error.doc_id().empty()) absl::StrAppend(&message, " with doc._id ", error.doc_id());
    out.add_lines(LogLine(message));
  }
  out.add_lines(result.rows());
  return out;
}

v1::SessionOutput QuerySession::Reduce(const Elements& command, bool rereduce, size_t line_bytes) {
  const std::string_view name = rereduce ? "rereduce" : "reduce";
  // Arguments after the values (a context string on CouchDB main) are ignored.
  if (command.size() < 3) return Lines({MissingArgument(name)});
  std::optional<std::vector<std::string>> functions = DecodeStrings(command[1]);
  if (!functions.has_value() || functions->empty()) {
    return Lines({ErrorLine("query_protocol_error",
                            absl::StrCat(AbslView(name), " expects a list of function names"))});
  }
  Task task;
  v1::ReduceRequest& request = *task.mutable_reduce();
  size_t names_bytes = 0;
  for (const std::string& function : *functions) {
    request.add_functions(function);
    names_bytes += function.size();
  }
  request.set_rereduce(rereduce);
  request.set_kvs(command[2].data(), command[2].size());

  v1::SessionOutput out;
  std::optional<Reply> reply = RunTask(task, out);
  if (!reply.has_value()) return out;
  if (!reply->has_reduce() ||
      reply->reduce().results_size() != static_cast<int>(functions->size())) {
    out.add_lines(UnexpectedReplyLine("reduce result per function"));
    return out;
  }
  const v1::ReduceResponse& response = reply->reduce();
  AddLogLines(response.logs(), out);
  for (const v1::FunctionError& error : response.errors()) {
    out.add_lines(LogLine(absl::StrCat("function raised exception (", Describe(error), ")")));
  }

  std::string reductions = "[";
  for (int i = 0; i < response.results_size(); ++i) {
    if (i > 0) reductions += ',';
    const std::string& result = response.results(i);
    reductions += result.empty() ? std::string_view("null") : std::string_view(result);
  }
  reductions += ']';
  const size_t input_bytes = line_bytes > names_bytes ? line_bytes - names_bytes : 0;
  if (std::optional<std::string> overflow =
          ReduceOverflow(config_, reductions.size(), input_bytes)) {
    if (config_.reduce_limit == QueryConfig::ReduceLimit::kOn) {
      out.add_lines(ErrorLine("reduce_overflow_error", *overflow));
      return out;
    }
    out.add_lines(LogLine(absl::StrCat("reduce_overflow_error: ", *overflow)));
  }
  out.add_lines(absl::StrCat("[true,", reductions, "]"));
  return out;
}

v1::SessionOutput QuerySession::DesignDoc(const Elements& command) {
  std::optional<std::string> id;
  if (command.size() > 1) id = DecodeString(command[1]);
  if (!id.has_value()) return Lines({MissingArgument("ddoc")});

  if (*id == "new") {
    std::optional<std::string> new_id;
    if (command.size() > 3) new_id = DecodeString(command[2]);
    if (!new_id.has_value()) return Lines({MissingArgument("ddoc new")});
    if (absl::Status status = design_docs_.Put(*new_id, command[3]); !status.ok()) {
      return Lines({ErrorLine("query_protocol_error", StdView(status.message()))});
    }
    return Lines({"true"});
  }

  if (!design_docs_.Contains(*id)) {
    return Exit(FatalLine("query_protocol_error", absl::StrCat("uncached design doc: ", *id)));
  }
  std::optional<std::vector<std::string>> path;
  if (command.size() > 2) path = DecodeStrings(command[2]);
  if (!path.has_value() || path->empty()) {
    return Exit(FatalLine("query_protocol_error",
                          "a ddoc call needs a function path such as [\"filters\",\"name\"]"));
  }
  const std::string& section = path->front();
  const std::string_view args = command.size() > 3 ? command[3] : std::string_view("[]");

  std::optional<v1::DesignFunctionKind> kind;
  if (section == "filters")
    kind = v1::FILTER;
  else if (section == "views")
    kind = v1::VIEW_FILTER;
  else if (section == "shows")
    kind = v1::SHOW;
  else if (section == "updates")
    kind = v1::UPDATE;
  else if (section == "rewrites")
    kind = v1::REWRITE;
  else if (section == "lists")
    kind = v1::LIST;
  else if (section != "validate_doc_update") {
    return Exit(FatalLine("unknown_command", absl::StrCat("unknown ddoc command '", section, "'")));
  }

  std::optional<std::string> function = design_docs_.FindFunction(*id, *path);
  if (!function.has_value()) {
    return Lines({ErrorLine("not_found", absl::StrCat("missing ", section, " function ",
                                                      path->back(), " on design doc ", *id))});
  }
  if (!kind.has_value()) return Validate(*function, args);
  if (*kind == v1::LIST) return StartList(*function, args);
  return CallDesignFunction(*kind, *function, args);
}

v1::SessionOutput QuerySession::Validate(std::string_view function, std::string_view args) {
  absl::StatusOr<Elements> parts = SplitJsonArray(args);
  if (!parts.ok() || parts->empty()) return Lines({MissingArgument("validate_doc_update")});
  Task task;
  v1::ValidateRequest& request = *task.mutable_validate();
  request.set_function(std::string(function));
  request.set_new_doc((*parts)[0].data(), (*parts)[0].size());
  if (parts->size() > 1) request.set_old_doc((*parts)[1].data(), (*parts)[1].size());
  if (parts->size() > 2) request.set_user_ctx((*parts)[2].data(), (*parts)[2].size());
  if (parts->size() > 3) request.set_sec_obj((*parts)[3].data(), (*parts)[3].size());

  v1::SessionOutput out;
  std::optional<Reply> reply = RunTask(task, out);
  if (!reply.has_value()) return out;
  if (!reply->has_validate()) {
    out.add_lines(UnexpectedReplyLine("validate result"));
    return out;
  }
  const v1::ValidateResponse& response = reply->validate();
  AddLogLines(response.logs(), out);
  std::string line;
  switch (response.outcome()) {
    case v1::ValidateResponse::OK:
      line = "1";
      break;
    case v1::ValidateResponse::FORBIDDEN:
    case v1::ValidateResponse::UNAUTHORIZED:
      line = response.outcome() == v1::ValidateResponse::FORBIDDEN ? "{\"forbidden\":"
                                                                   : "{\"unauthorized\":";
      AppendJsonString(line, response.message());
      line += '}';
      break;
    case v1::ValidateResponse::ERROR: {
      const std::string& type = response.error().type();
      line = ErrorLine(type.empty() ? "validation_error" : type, response.error().message().empty()
                                                                     ? response.message()
                                                                     : response.error().message());
      break;
    }
    default:
      line = UnexpectedReplyLine("validate outcome");
  }
  out.add_lines(std::move(line));
  return out;
}

v1::SessionOutput QuerySession::CallDesignFunction(v1::DesignFunctionKind kind,
                                                   std::string_view function,
                                                   std::string_view args) {
  Task task;
  v1::DesignFunctionRequest& request = *task.mutable_design();
  request.set_kind(kind);
  request.set_function(std::string(function));
  request.set_args(args.data(), args.size());

  v1::SessionOutput out;
  std::optional<Reply> reply = RunTask(task, out);
  if (!reply.has_value()) return out;
  if (!reply->has_design() || reply->design().reply().empty()) {
    out.add_lines(UnexpectedReplyLine("design function reply"));
    return out;
  }
  AddLogLines(reply->design().logs(), out);
  out.add_lines(reply->design().reply());
  return out;
}

v1::SessionOutput QuerySession::StartList(std::string_view function, std::string_view args) {
  absl::StatusOr<Elements> parts = SplitJsonArray(args);
  if (!parts.ok() || parts->empty()) return Lines({MissingArgument("lists")});
  Task task;
  worker::v1::ListStart& start = *task.mutable_list_start();
  start.set_function(std::string(function));
  start.set_head((*parts)[0].data(), (*parts)[0].size());
  if (parts->size() > 1) {
    start.set_req((*parts)[1].data(), (*parts)[1].size());
  } else {
    start.set_req("{}");
  }
  absl::StatusOr<std::unique_ptr<pool::WorkerLease>> lease = runner_.Lease(CallDeadline());
  if (!lease.ok()) return Lines({InfrastructureErrorLine(lease.status())});
  list_ = std::make_unique<ListInProgress>(*std::move(lease), CallDeadline());
  return StepList(task);
}

v1::SessionOutput QuerySession::ContinueList(std::string_view line) {
  line = TrimJsonText(line);
  std::optional<std::string> name;
  absl::StatusOr<Elements> command = ParseCommand(line);
  if (command.ok() && !command->empty()) name = DecodeString(command->front());
  Task task;
  if (name == "list_row" && command->size() > 1) {
    task.mutable_list_row()->set_row((*command)[1].data(), (*command)[1].size());
  } else if (name == "list_end") {
    task.mutable_list_row();  // an empty row is the end of rows
  } else {
    list_.reset();
    // couchjs names the command; a line that is not even a command is quoted, shortened.
    const std::string what = name.value_or(std::string(line.substr(0, 100)));
    return Exit(FatalLine("list_error", absl::StrCat("not a row '", what, "'")));
  }
  return StepList(task);
}

v1::SessionOutput QuerySession::StepList(const Task& task) {
  absl::StatusOr<Reply> reply = list_->Exchange(task, CallDeadline());
  v1::SessionOutput out;
  bool finished = true;
  if (!reply.ok()) {
    out.add_lines(InfrastructureErrorLine(reply.status()));
  } else {
    AddLogLines(reply->logs(), out);
    if (reply->has_failure()) {
      out.add_lines(FailureLine(reply->failure()));
    } else if (!reply->has_list_step() || reply->list_step().reply().empty()) {
      out.add_lines(UnexpectedReplyLine("list step"));
    } else {
      const worker::v1::ListStep& step = reply->list_step();
      // The function returned (["end",..]) or raised (an error line): the list is over.
      finished = step.done() || step.reply().starts_with("[\"error\"") ||
                 step.reply().starts_with("[\"fatal\"");
      out.add_lines(step.reply());
    }
  }
  if (finished) {
    list_->MarkFinished();
    list_.reset();
  }
  return out;
}

}  // namespace cnp::couchdb
