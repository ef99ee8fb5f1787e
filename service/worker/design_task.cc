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

// How many arguments CouchDB sends for each kind, and which of them must be arrays.
struct KindShape {
  int arguments;
  bool first_is_list;
  bool last_is_list;
};

std::optional<KindShape> ShapeOf(DesignFunctionKind kind) {
  switch (kind) {
    case cnp::v1::FILTER: return KindShape{2, true, false};
    case cnp::v1::VIEW_FILTER: return KindShape{1, true, true};
    case cnp::v1::SHOW: return KindShape{2, false, false};
    case cnp::v1::UPDATE: return KindShape{2, false, false};
    case cnp::v1::REWRITE: return KindShape{1, false, false};
    case cnp::v1::LIST: return KindShape{3, false, true};
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

std::string CheckArguments(PyObject* args, const KindShape& shape) {
  if (!PyList_Check(args)) return "args is not a JSON array";
  Py_ssize_t n = PyList_GET_SIZE(args);
  if (n < shape.arguments) {
    return absl::StrCat("args has ", n, " elements; this kind takes ", shape.arguments);
  }
  if (shape.first_is_list && !PyList_Check(PyList_GET_ITEM(args, 0))) {
    return "args[0] must be an array of documents";
  }
  if (shape.last_is_list && !PyList_Check(PyList_GET_ITEM(args, shape.arguments - 1))) {
    return absl::StrCat("args[", shape.arguments - 1, "] must be an array");
  }
  return "";
}

}  // namespace

v1::Reply RunDesignFunction(FunctionRegistry& registry,
                            const cnp::v1::DesignFunctionRequest& request) {
  std::optional<KindShape> shape = ShapeOf(request.kind());
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
