#include <optional>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "service/couchdb/command.h"
#include "service/worker/call_context.h"
#include "service/worker/forked_child.h"
#include "service/worker/json_to_python.h"
#include "service/worker/raised_log.h"
#include "service/worker/task_support.h"
#include "service/worker/tasks.h"
#include "service/worker/unrun_body.h"

namespace cnp::worker {
namespace {

// Splits CouchDB's [[[key, id], value], ...] into keys [[key, id], ...] and values.
absl::Status SplitKeyValues(PyObject* kvs, PyRef& keys, PyRef& values) {
  Py_ssize_t n = PyList_GET_SIZE(kvs);
  keys = PyRef::Steal(PyList_New(n));
  values = PyRef::Steal(PyList_New(n));
  if (!keys || !values) return absl::ResourceExhaustedError("out of memory");
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* pair = PyList_GET_ITEM(kvs, i);
    if (!PyList_Check(pair) || PyList_GET_SIZE(pair) != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("kvs[", i, "] is not a [[key, doc_id], value] pair"));
    }
    PyList_SET_ITEM(keys.get(), i, Py_NewRef(PyList_GET_ITEM(pair, 0)));
    PyList_SET_ITEM(values.get(), i, Py_NewRef(PyList_GET_ITEM(pair, 1)));
  }
  return absl::OkStatus();
}

// A fresh list per function, so that one function adding to or removing from its list cannot
// affect the next. The values in it are shared, as couchjs shares even the list: a reduce
// changing a value in place changes it for the functions after it.
PyRef CopyOf(PyObject* list) {
  return list == Py_None ? PyRef::Borrow(Py_None)
                         : PyRef::Steal(PyList_GetSlice(list, 0, PyList_GET_SIZE(list)));
}

// The reduce once its functions are loaded and its values parsed (or not: `kvs`'s failure).
v1::Reply Reduce(const cnp::v1::ReduceRequest& request,
                 const std::vector<const LoadedFunction*>& loaded,
                 const absl::StatusOr<PyRef>& kvs, Reply reply) {
  if (!kvs.ok()) return FailureReply(Failure::BAD_INPUT, absl::StrCat("kvs: ", kvs.status().message()));
  if (!PyList_Check(kvs->get())) return FailureReply(Failure::BAD_INPUT, "kvs is not a JSON array");
  PyRef keys = PyRef::Borrow(Py_None), values = *kvs;
  if (!request.rereduce()) {
    if (absl::Status s = SplitKeyValues(kvs->get(), keys, values); !s.ok()) {
      return FailureReply(Failure::BAD_INPUT, s.message());
    }
  }

  cnp::v1::ReduceResponse* response = reply.mutable_reduce();
  for (size_t i = 0; i < loaded.size(); ++i) {
    const LoadedFunction& function = *loaded[i];
    PyRef keys_arg = loaded.size() > 1 ? CopyOf(keys.get()) : keys;
    PyRef values_arg = loaded.size() > 1 ? CopyOf(values.get()) : values;
    PyRef result;
    ScopedLogOrigin origin({request.rereduce() ? "rereduce" : "reduce", request.functions(i)});
    if (keys_arg && values_arg) {
      result = function.max_positional_args == 2
                   ? PyRef::Steal(PyObject_CallFunctionObjArgs(
                         function.callable.get(), keys_arg.get(), values_arg.get(), nullptr))
                   : PyRef::Steal(PyObject_CallFunctionObjArgs(
                         function.callable.get(), keys_arg.get(), values_arg.get(),
                         request.rereduce() ? Py_True : Py_False, nullptr));
      LeaveIfForkedChild();
      // A reduce with a yield in it (or async def) ran none of its body: its null says why
      // rather than that a generator is not JSON.
      RefuseUnrunBody(result, request.functions(i), "reduced nothing",
                      "a reduce function returns its reduction of the values");
    }
    std::optional<std::string> json = result ? ToJson(result.get()) : std::nullopt;
    // Each result joins the answer (the same big value returned by every function is as many
    // copies): past its limit nothing more is built.
    if (json) Context().answer.Take(json->size());
    if (Context().answer.exceeded()) {
      PyErr_Clear();
      return AnswerTooLargeReply();
    }
    if (json) {
      response->add_results(*std::move(json));
    } else {
      response->add_results("null");
      cnp::v1::FunctionError& error = *response->add_errors();
      UserException exception = TakeException();
      FillFunctionError(error, request.functions(i), "", exception);
      // As a map's: the lines logged before it go before its exception, and in a direct
      // session those after it wait for the answer, which tells the exception first.
      error.set_logs_before(static_cast<int32_t>(Context().logs.size()));
      Context().eager_log_held = true;
      LogRaised(exception);
      if (!Context().answer.Take(error.type().size() + error.message().size())) {
        return AnswerTooLargeReply();
      }
    }
  }
  TakeLogs(*response->mutable_logs());
  return reply;
}

// Whether `after` (what follows the values on a trimmed line) is the line's closing bracket
// alone, the one ending CouchDB writes.
bool IsClosingBracket(std::string_view after) {
  while (!after.empty() && (after.front() == ' ' || after.front() == '\t' ||
                            after.front() == '\r' || after.front() == '\n')) {
    after.remove_prefix(1);
  }
  return after == "]";
}

}  // namespace

v1::Reply RunReduce(FunctionRegistry& registry, const cnp::v1::ReduceRequest& request) {
  Reply reply;
  std::vector<const LoadedFunction*> loaded;
  if (!LoadAll(registry, request.functions(), loaded, reply)) return reply;
  return Reduce(request, loaded, ParseJson(request.kvs()), std::move(reply));
}

v1::Reply RunReduceOfLine(FunctionRegistry& registry, const cnp::v1::ReduceRequest& request,
                          const v1::SessionLine& line, std::string& scratch) {
  // The one walk over the values: rapidjson checks them as it builds the Python objects.
  const std::string_view rest = request.kvs();
  size_t end = 0;
  absl::StatusOr<PyRef> kvs = ParseJsonValue(rest, scratch, end);
  // Anything but values that parsed followed by the closing bracket takes the slow road: the
  // line is judged as the session would judge it whole, and a broken line is the answer before
  // anything else is (it was when the session checked every line before running anything).
  if (!kvs.ok() || !IsClosingBracket(rest.substr(end))) {
    std::optional<std::string> problem =
        kvs.ok() ? couchdb::LineRestProblem(rest.substr(end), line.offset() + end,
                                            /*after_comma=*/false)
                 : couchdb::LineRestProblem(rest, line.offset(), /*after_comma=*/true);
    if (problem.has_value()) return FailureReply(Failure::BAD_LINE, *problem);
    // JSON that Python would not take (bytes that are not UTF-8, nesting too deep, memory):
    // the same error a checked line's values get, after the functions are loaded.
  }
  Reply reply;
  std::vector<const LoadedFunction*> loaded;
  if (!LoadAll(registry, request.functions(), loaded, reply)) return reply;
  return Reduce(request, loaded, kvs, std::move(reply));
}

}  // namespace cnp::worker
