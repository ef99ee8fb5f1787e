#include "absl/algorithm/container.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/io/coded_stream.h"
#include "service/worker/call_context.h"
#include "service/worker/failed_imports.h"
#include "service/worker/name_suggestion.h"
#include "service/worker/py_ref.h"
#include "service/worker/py_text.h"
#include "service/worker/task_support.h"
#include "service/worker/tasks.h"
#include "service/worker/unrun_body.h"

namespace cnp::worker {
namespace {

cnp::v1::ResolvedFunction::Body ToProto(Body body) {
  switch (body) {
    case Body::kPlain: break;
    case Body::kGenerator: return cnp::v1::ResolvedFunction::GENERATOR;
    case Body::kCoroutine: return cnp::v1::ResolvedFunction::COROUTINE;
    case Body::kAsyncGenerator: return cnp::v1::ResolvedFunction::ASYNC_GENERATOR;
  }
  return cnp::v1::ResolvedFunction::PLAIN;
}

// The parameters a Python function's own code declares (as accepted_arguments.h reads them: not
// a decorator's __wrapped__, since the wrapper is what is called). Nothing for other callables.
void DescribeParameters(PyObject* function, cnp::v1::ResolvedFunction::Parameters& parameters) {
  auto* code = reinterpret_cast<PyCodeObject*>(PyFunction_GetCode(function));
  PyObject* defaults = PyFunction_GetDefaults(function);  // a tuple, or nullptr
  const int with_default = defaults != nullptr ? static_cast<int>(PyTuple_GET_SIZE(defaults)) : 0;
  parameters.set_positional(code->co_argcount);
  parameters.set_required(code->co_argcount - with_default);
  parameters.set_varargs((code->co_flags & CO_VARARGS) != 0);
  if (code->co_kwonlyargcount == 0) return;
  PyRef names = PyRef::Steal(PyCode_GetVarnames(code));
  if (!names) {
    PyErr_Clear();
    return;
  }
  PyObject* keyword_defaults = PyFunction_GetKwDefaults(function);  // a dict, or nullptr
  for (int i = code->co_argcount; i < code->co_argcount + code->co_kwonlyargcount; ++i) {
    PyObject* name = PyTuple_GET_ITEM(names.get(), i);
    const int has_default =
        keyword_defaults != nullptr ? PyDict_Contains(keyword_defaults, name) : 0;
    if (has_default < 0) PyErr_Clear();
    if (has_default == 0) parameters.add_keyword_only_required(Utf8Text(name));
  }
}

// The bytes `resolved` adds to the answer: itself, and its tag and length in the list.
size_t AnswerBytes(const cnp::v1::ResolvedFunction& resolved) {
  const size_t size = resolved.ByteSizeLong();
  return 1 + google::protobuf::io::CodedOutputStream::VarintSize64(size) + size;
}

// Fills `resolved` with what `text` names, or why it cannot be used.
void ResolveOne(FunctionRegistry& registry, const std::string& text, bool versions_as_run,
                NameSuggester& suggester, cnp::v1::ResolvedFunction& resolved, Reply& reply) {
  resolved.set_function(NameForMessage(text));
  absl::StatusOr<FunctionName> name = ParseFunctionName(text);
  absl::StatusOr<const LoadedFunction*> function =
      name.ok() ? registry.Resolve(*name) : absl::StatusOr<const LoadedFunction*>(name.status());
  if (function.ok() && versions_as_run && !name->version.has_value() &&
      (*function)->version.has_value()) {
    // Running it would fail at every call (FunctionRegistry::Load): say so now, with the fix.
    function = absl::FailedPreconditionError(
        UnversionedNameMessage(name->path, *(*function)->version));
  }
  if (!function.ok()) {
    std::string error(function.status().message());
    // A typo in a module or function name (cnp check, cnp upload, an add_fun): the closest
    // name that exists, looked for only on this error path.
    if (name.ok()) error += suggester.DidYouMean(function.status(), *name);
    resolved.set_error(std::move(error));
    // The code a call naming it would fail with (a version mismatch is FAILED_PRECONDITION).
    resolved.set_error_code(static_cast<int>(function.status().code()));
    // Counted once for the task, however many of its names need the module.
    std::optional<std::string> module = ImportRaisedIn(function.status());
    if (module && absl::c_find(reply.import_raised(), *module) == reply.import_raised().end()) {
      reply.add_import_raised(std::move(*module));
    }
    return;
  }
  resolved.set_module((*function)->module);
  resolved.set_body(ToProto(BodyOf((*function)->callable.get())));
  if (PyFunction_Check((*function)->callable.get())) {
    DescribeParameters((*function)->callable.get(), *resolved.mutable_parameters());
  }
  resolved.set_has_version((*function)->version.has_value());
  resolved.set_version((*function)->version.value_or(0));
  resolved.set_versioned_name(
      (*function)->version ? absl::StrCat(name->path, "|", *(*function)->version) : name->path);
}

}  // namespace

// Resolve never runs a function: it reports what a name refers to. A name without "|version"
// is not checked against @version (that is how upload learns the version to append), unless
// `versions_as_run`; a name with one must match.
//
// The answer has one entry per name asked, in order, but a name asked again is resolved once
// (its entry copied): each resolve looks at the disk for changes. Each entry is counted into the
// answer as it is added, so an answer past the task's limit stops there: a Resolve of 3.9
// million names took a worker to 1.37 GB (and it kept it) before the limit was checked on the
// whole.
v1::Reply RunResolve(FunctionRegistry& registry, const cnp::v1::ResolveRequest& request,
                     bool versions_as_run) {
  // All its names are asked at once: each imported package is looked at on disk once, not once
  // per name (FunctionRegistry::TaskScope).
  const FunctionRegistry::TaskScope scope(registry);
  Reply reply;
  cnp::v1::ResolveResponse* response = reply.mutable_resolve();
  NameSuggester suggester = registry.Suggester();
  // Each distinct name's first entry, by the name as the request holds it (which outlives this).
  absl::flat_hash_map<absl::string_view, int> first_entry;
  for (const std::string& text : request.functions()) {
    const auto [first, fresh] = first_entry.try_emplace(text, response->functions_size());
    cnp::v1::ResolvedFunction* resolved = response->add_functions();
    if (fresh) {
      ResolveOne(registry, text, versions_as_run, suggester, *resolved, reply);
    } else {
      *resolved = response->functions(first->second);
    }
    if (!Context().answer.Take(AnswerBytes(*resolved))) return AnswerTooLargeReply();
  }
  return reply;
}

}  // namespace cnp::worker
