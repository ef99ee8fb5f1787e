#include "absl/strings/str_cat.h"
#include "service/worker/failed_imports.h"
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

}  // namespace

// Resolve never runs a function: it reports what a name refers to. A name without "|version"
// is not checked against @version (that is how upload learns the version to append), unless
// `versions_as_run`; a name with one must match.
v1::Reply RunResolve(FunctionRegistry& registry, const cnp::v1::ResolveRequest& request,
                     bool versions_as_run) {
  Reply reply;
  cnp::v1::ResolveResponse* response = reply.mutable_resolve();
  for (const std::string& text : request.functions()) {
    cnp::v1::ResolvedFunction* resolved = response->add_functions();
    resolved->set_function(NameForMessage(text));
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
      // name that exists, looked for only on this error path. A misspelt module is refused by
      // --allow-module before it is looked for, so refusals are asked too: the guess is only
      // ever an allowed module, and a module that exists (os) gets none.
      if ((absl::IsNotFound(function.status()) || absl::IsPermissionDenied(function.status())) &&
          name.ok()) {
        if (std::optional<std::string> meant = registry.Suggest(*name)) {
          absl::StrAppend(&error, "; did you mean \"", *meant, "\"?");
        }
      }
      resolved->set_error(std::move(error));
      // The code a call naming it would fail with (a version mismatch is FAILED_PRECONDITION).
      resolved->set_error_code(static_cast<int>(function.status().code()));
      if (ImportRaised(function.status())) reply.add_import_raised(text);
      continue;
    }
    resolved->set_module((*function)->module);
    resolved->set_body(ToProto(BodyOf((*function)->callable.get())));
    resolved->set_has_version((*function)->version.has_value());
    resolved->set_version((*function)->version.value_or(0));
    resolved->set_versioned_name(
        (*function)->version ? absl::StrCat(name->path, "|", *(*function)->version) : name->path);
  }
  return reply;
}

}  // namespace cnp::worker
