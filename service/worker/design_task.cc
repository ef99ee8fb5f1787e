#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "service/worker/call_context.h"
#include "service/worker/forked_child.h"
#include "service/worker/json_to_python.h"
#include "service/worker/python_runtime.h"
#include "service/worker/task_support.h"
#include "service/worker/tasks.h"

namespace cnp::worker {
namespace {

using cnp::v1::DesignFunctionKind;

// What CouchDB passes in each argument: documents and requests are JSON objects, always. A
// value of another type is refused before any function sees it: a named function is any
// callable on the path, and one that takes text (a library's loader, yaml.unsafe_load, bundled
// in the operator's package) must never be handed the caller's text for a document.
enum class Arg {
  kObject,         // a request, a list's head
  kObjectOrNull,   // a show's or an update's document
  kObjects,        // an array of documents or of a list's rows
};

// The arguments CouchDB sends for each kind, in order.
std::optional<std::vector<Arg>> ShapeOf(DesignFunctionKind kind) {
  switch (kind) {
    case cnp::v1::FILTER: return std::vector{Arg::kObjects, Arg::kObject};
    case cnp::v1::VIEW_FILTER: return std::vector{Arg::kObjects};
    case cnp::v1::SHOW: return std::vector{Arg::kObjectOrNull, Arg::kObject};
    case cnp::v1::UPDATE: return std::vector{Arg::kObjectOrNull, Arg::kObject};
    case cnp::v1::REWRITE: return std::vector{Arg::kObject};
    case cnp::v1::LIST: return std::vector{Arg::kObject, Arg::kObject, Arg::kObjects};
    default: return std::nullopt;
  }
}

// The kind's name in the service's log, next to a log() line the function made.
std::string_view KindName(DesignFunctionKind kind) {
  switch (kind) {
    case cnp::v1::FILTER: return "filter";
    case cnp::v1::VIEW_FILTER: return "view_filter";
    case cnp::v1::SHOW: return "show";
    case cnp::v1::UPDATE: return "update";
    case cnp::v1::REWRITE: return "rewrite";
    case cnp::v1::LIST: return "list";
    default: return "design";
  }
}

std::string CheckArguments(PyObject* args, const std::vector<Arg>& shape) {
  if (!PyList_Check(args)) return "args is not a JSON array";
  const Py_ssize_t n = PyList_GET_SIZE(args);
  if (n < static_cast<Py_ssize_t>(shape.size())) {
    return absl::StrCat("args has ", n, " elements; this kind takes ", shape.size());
  }
  for (size_t i = 0; i < shape.size(); ++i) {
    PyObject* value = PyList_GET_ITEM(args, i);
    switch (shape[i]) {
      case Arg::kObjectOrNull:
        if (value == Py_None) break;
        [[fallthrough]];
      case Arg::kObject:
        if (!PyDict_Check(value)) {
          return absl::StrCat("args[", i, "] must be a JSON object",
                              shape[i] == Arg::kObjectOrNull ? " or null" : "", ", not ",
                              JsonTypeName(value));
        }
        break;
      case Arg::kObjects:
        if (!PyList_Check(value)) return absl::StrCat("args[", i, "] must be an array");
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(value); ++j) {
          if (PyObject* item = PyList_GET_ITEM(value, j); !PyDict_Check(item)) {
            return absl::StrCat("args[", i, "][", j, "] must be a JSON object, not ",
                                JsonTypeName(item));
          }
        }
        break;
    }
  }
  return "";
}

}  // namespace

v1::Reply RunDesignFunction(FunctionRegistry& registry,
                            const cnp::v1::DesignFunctionRequest& request) {
  std::optional<std::vector<Arg>> shape = ShapeOf(request.kind());
  if (!shape) {
    return FailureReply(Failure::BAD_INPUT,
                        absl::StrCat("unknown design function kind ", request.kind()),
                        request.function());
  }
  absl::StatusOr<const LoadedFunction*> function = registry.Load(request.function());
  if (!function.ok()) return LoadFailureReply(function.status(), request.function());
  absl::StatusOr<PyRef> args = ParseJson(request.args());
  if (!args.ok()) {
    return FailureReply(Failure::BAD_INPUT, absl::StrCat("args: ", args.status().message()),
                        request.function());
  }
  if (std::string problem = CheckArguments(args->get(), *shape); !problem.empty()) {
    return FailureReply(Failure::BAD_INPUT, problem, request.function());
  }

  // A show or an update is about one document (or none: null), its first argument.
  const bool about_one_doc = request.kind() == cnp::v1::SHOW || request.kind() == cnp::v1::UPDATE;
  ScopedLogOrigin origin({KindName(request.kind()), request.function(),
                          about_one_doc ? PyList_GET_ITEM(args->get(), 0) : nullptr});
  PyObject* runtime = RuntimeModule();
  PyRef outcome = runtime ? PyRef::Steal(PyObject_CallMethod(
                                runtime, "run_design", "iOO", static_cast<int>(request.kind()),
                                (*function)->callable.get(), args->get()))
                          : PyRef();
  LeaveIfForkedChild();
  if (!outcome) {
    return FailureReply(Failure::INTERNAL, TakeException().Summary(), request.function());
  }
  Reply reply;
  cnp::v1::DesignFunctionResponse* response = reply.mutable_design();
  cnp::v1::FunctionError error;
  StoreRuntimeResult(outcome.get(), KindName(request.kind()), request.function(), response->mutable_reply(), &error);
  if (!error.type().empty()) *response->mutable_error() = std::move(error);
  TakeLogs(*response->mutable_logs());
  return reply;
}

}  // namespace cnp::worker
