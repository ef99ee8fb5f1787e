#include "service/worker/task_support.h"

#include "absl/strings/str_cat.h"
#include "service/worker/call_context.h"
#include "service/worker/failed_imports.h"
#include "service/worker/json_buffer.h"
#include "service/worker/name_suggestion.h"
#include "service/worker/py_ref.h"
#include "service/worker/py_text.h"
#include "service/worker/json_to_python.h"
#include "service/worker/python_to_json.h"
#include "service/worker/raised_log.h"

namespace cnp::worker {

Reply FailureReply(Failure::Code code, absl::string_view message, absl::string_view function) {
  Reply reply;
  Failure* failure = reply.mutable_failure();
  failure->set_code(code);
  failure->set_message(std::string(message));
  failure->set_function(std::string(function));
  return reply;
}

Reply AnswerTooLargeReply() {
  CallContext& context = Context();
  context.answer.MarkExceeded();
  std::string message = context.answer.Message();
  if (!context.logs.empty()) {
    absl::StrAppend(&message, " (", context.logs.size(), " log() lines made for it were dropped)");
  }
  context.logs.clear();
  context.logs.shrink_to_fit();
  context.attributed_logs.clear();
  context.attributed_logs.shrink_to_fit();
  return FailureReply(Failure::ANSWER_TOO_LARGE, message);
}

Reply LoadFailureReply(const absl::Status& status, absl::string_view function) {
  Failure::Code code = Failure::INTERNAL;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument: code = Failure::BAD_NAME; break;
    case absl::StatusCode::kNotFound: code = Failure::NOT_FOUND; break;
    case absl::StatusCode::kPermissionDenied: code = Failure::PERMISSION_DENIED; break;
    case absl::StatusCode::kFailedPrecondition: code = Failure::VERSION_MISMATCH; break;
    default: break;
  }
  Reply reply = FailureReply(code, status.message(), NameForMessage(function));
  // Its module's code raised: an error the server counts, under that module.
  if (std::optional<std::string> module = ImportRaisedIn(status)) {
    reply.add_import_raised(std::move(*module));
  }
  return reply;
}

namespace {

// A typo in a Map or Reduce call's function name (`cnp map myveiws.townmap`, another service's
// call): the guess `cnp check` and an add_fun give (resolve_task.cc), on this error path only.
absl::Status WithGuess(FunctionRegistry& registry, const absl::Status& status,
                       const std::string& text) {
  if (status.ok()) return status;
  absl::StatusOr<FunctionName> name = ParseFunctionName(text);
  if (!name.ok()) return status;
  const std::string guess = registry.Suggester().DidYouMean(status, *name);
  if (guess.empty()) return status;
  absl::Status guessed(status.code(), absl::StrCat(status.message(), guess));
  status.ForEachPayload([&guessed](absl::string_view url, const absl::Cord& payload) {
    guessed.SetPayload(url, payload);
  });
  return guessed;
}

}  // namespace

bool LoadAll(FunctionRegistry& registry, const google::protobuf::RepeatedPtrField<std::string>& names,
             std::vector<const LoadedFunction*>& loaded, Reply& failure) {
  // Loading one function may import its package anew (its code changed on disk), which
  // drops what was loaded from that package before: then load the whole list again.
  for (int attempt = 0; attempt < 3; ++attempt) {
    uint64_t generation = registry.generation();
    loaded.clear();
    for (const std::string& name : names) {
      absl::StatusOr<const LoadedFunction*> function = registry.Load(name);
      if (!function.ok()) {
        failure = LoadFailureReply(WithGuess(registry, function.status(), name), name);
        return false;
      }
      loaded.push_back(*function);
    }
    if (registry.generation() == generation) return true;
  }
  failure = FailureReply(Failure::INTERNAL,
                         "the functions' modules kept changing on disk while they were loaded; "
                         "retry when the files are written");
  return false;
}

void FillFunctionError(cnp::v1::FunctionError& error, absl::string_view function,
                       absl::string_view doc_id, const UserException& exception) {
  error.set_function(std::string(function));
  error.set_doc_id(std::string(doc_id));
  error.set_type(exception.type);
  error.set_message(exception.Detail());
}

void TakeLogs(google::protobuf::RepeatedPtrField<std::string>& logs) {
  std::vector<std::string>& collected = Context().logs;
  for (std::string& line : collected) logs.Add(std::move(line));
  collected.clear();
}

const char* JsonTypeName(PyObject* value) {
  if (value == Py_None) return "null";
  if (PyBool_Check(value)) return "a boolean";
  if (PyUnicode_Check(value)) return "a string";
  if (PyList_Check(value)) return "an array";
  if (PyDict_Check(value)) return "an object";
  return "a number";
}

void TakeAttributedLogs(google::protobuf::RepeatedPtrField<v1::FunctionLog>& logs) {
  std::vector<AttributedLog>& collected = Context().attributed_logs;
  for (AttributedLog& line : collected) {
    v1::FunctionLog& log = *logs.Add();
    log.set_message(std::move(line.message));
    log.set_function(std::move(line.function));
    log.set_kind(std::move(line.kind));
    log.set_doc_id(std::move(line.doc_id));
    log.set_error(std::move(line.error));
    log.set_traceback(std::move(line.traceback));
  }
  collected.clear();
}

absl::StatusOr<PyRef> ParseOptionalJson(const std::string& json, WhenEmpty when_empty) {
  if (json.empty()) {
    return when_empty == WhenEmpty::kNone ? PyRef::Borrow(Py_None) : PyRef::Steal(PyDict_New());
  }
  return ParseJson(json);
}

std::optional<std::string> ToJson(PyObject* value) {
  if (value == nullptr) return std::nullopt;  // building it failed (MemoryError is set)
  JsonBuffer buffer;
  PythonJsonWriter writer(buffer);
  if (!writer.Write(value)) return std::nullopt;
  return std::string(buffer.GetString(), buffer.GetSize());
}

void StoreRuntimeResult(PyObject* outcome, std::string_view kind, absl::string_view function,
                        std::string* reply_json, cnp::v1::FunctionError* error) {
  PyObject* reply = PyTuple_GET_ITEM(outcome, 0);
  PyObject* raised = PyTuple_GET_ITEM(outcome, 1);
  if (raised != Py_None) {
    UserException exception;
    exception.type = Utf8Text(PyTuple_GET_ITEM(raised, 0));
    exception.message = Utf8Text(PyTuple_GET_ITEM(raised, 1));  // with where it was raised
    exception.value = PyRef::Borrow(PyTuple_GET_ITEM(raised, 3));
    if (exception.type == "MemoryError") Context().memory_error = true;
    error->set_function(std::string(function));
    error->set_type(exception.type);
    error->set_message(exception.message);
    error->set_doc_id(Utf8Text(PyTuple_GET_ITEM(raised, 2)));
    LogRaised(exception, kind, error->function(), error->doc_id());
  }
  if (std::optional<std::string> json = ToJson(reply)) {
    *reply_json = *std::move(json);
    return;
  }
  if (Context().answer.exceeded()) {
    // Not the function's error: its answer passed --max-call-bytes, which the task's reply
    // says instead of any response (ANSWER_TOO_LARGE, task_loop.cc).
    PyErr_Clear();
    return;
  }
  // The function's answer is not JSON (a set in a response, say): that is its error, told as
  // render.js tells one (a log line, then render_error), and in the service's log.
  UserException exception = TakeException();
  FillFunctionError(*error, function, "", exception);
  std::string summary = exception.Summary();
  Context().logs.push_back(absl::StrCat("function returned a response that is not JSON: ", summary));
  exception.message = absl::StrCat("the function's response is not JSON: ", exception.message);
  LogRaised(exception, kind, error->function(), "");
  std::optional<std::string> error_json =
      ToJson(PyRef::Steal(Py_BuildValue("[sss]", "error", "render_error", summary.c_str())).get());
  if (!error_json.has_value()) {
    PyErr_Clear();  // no room left even for the error: the reply says ANSWER_TOO_LARGE
    return;
  }
  *reply_json = *std::move(error_json);
}

}  // namespace cnp::worker
