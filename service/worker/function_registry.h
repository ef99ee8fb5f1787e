// Imports named functions once per worker and hands them out by name.
//
// Status codes say what went wrong, with couch-named-python's messages:
//   INVALID_ARGUMENT     not "module.function[|version]"
//   NOT_FOUND            the import or the attribute lookup failed ("ModuleNotFoundError: ...")
//   PERMISSION_DENIED    the module policy refuses the function
//   FAILED_PRECONDITION  @version differs from the requested version
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "service/worker/function_name.h"
#include "service/worker/module_policy.h"
#include "service/worker/py_ref.h"

namespace cnp::worker {

struct LoadedFunction {
  PyRef callable;
  std::string module;               // the function's own __module__
  std::optional<int64_t> version;   // from @version
  int max_positional_args = -1;     // -1: unknown or *args
};

class FunctionRegistry {
 public:
  explicit FunctionRegistry(ModulePolicy policy) : policy_(std::move(policy)) {}

  // Imports the function (cached by path) and applies the policy; ignores any version.
  absl::StatusOr<const LoadedFunction*> Import(const FunctionName& name);

  // What running a function needs: parse, Import, and check the requested version.
  absl::StatusOr<const LoadedFunction*> Load(absl::string_view name);

 private:
  absl::StatusOr<LoadedFunction> ImportUncached(const FunctionName& name);

  ModulePolicy policy_;
  std::unordered_map<std::string, LoadedFunction> by_path_;
  // Full names ("path|version") that loaded and matched: CouchDB sends one document per task,
  // so this lookup is all a repeated name costs. Points into by_path_, whose nodes never move.
  std::unordered_map<std::string, const LoadedFunction*> by_name_;
};

}  // namespace cnp::worker
