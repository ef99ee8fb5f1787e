// Imports named functions once per worker and hands them out by name.
//
// Status codes say what went wrong, with couch-named-python's messages:
//   INVALID_ARGUMENT     not "module.function[|version]" (or too long, or control characters)
//   NOT_FOUND            the import or the attribute lookup failed ("ModuleNotFoundError: ...")
//   PERMISSION_DENIED    the module policy refuses the function (checked before any import)
//   FAILED_PRECONDITION  @version differs from the requested version
//
// A version that differs from the loaded function's, and a function or module that is not
// found, are checked once more against the code on disk: if a file of the function's package
// changed since it was imported, the package is imported anew, so an edited module with a
// bumped @version, or with a function added to it, is picked up by every long-lived worker
// without a restart. Load looks at the same name no more than once a second; Resolve (uploads,
// add_fun) looks every time. An edit that does not import (a syntax error) fails the names
// that need the new code, with its error; the package as it was imported goes on serving the
// names whose version it matches. A module whose code does not import, new or edited, is not
// imported again for each call: its failure is answered again until its files change
// (failed_imports.h), looked at as above.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "service/worker/failed_imports.h"
#include "service/worker/function_name.h"
#include "service/worker/module_policy.h"
#include "service/worker/name_suggestion.h"
#include "service/worker/py_ref.h"
#include "service/worker/source_stamps.h"

namespace cnp::worker {

struct LoadedFunction {
  PyRef callable;
  std::string module;               // the function's own __module__
  std::optional<int64_t> version;   // from @version
  int max_positional_args = -1;     // PositionalParameters (accepted_arguments.h); for reduce
};

class FunctionRegistry {
 public:
  // `clock` says when it is, for the once-a-second looks at the disk (a test's own clock).
  explicit FunctionRegistry(ModulePolicy policy,
                            std::function<absl::Time()> clock = [] { return absl::Now(); });
  FunctionRegistry(const FunctionRegistry&) = delete;  // stamps_ refers to policy_
  FunctionRegistry& operator=(const FunctionRegistry&) = delete;

  // What running a function needs: parse, import, and check the requested version (a name
  // without one requires a function without @version).
  absl::StatusOr<const LoadedFunction*> Load(absl::string_view name);

  // What Resolve reports: like Load, but a name without "|version" is not checked against
  // @version (that is how upload learns the version to append); its module is still
  // imported anew if its files changed, so the answer is the code on disk.
  absl::StatusOr<const LoadedFunction*> Resolve(const FunctionName& name);

  // Imports `module` now, with the checks a function of it gets before its import (the name,
  // --allow-module, where it would load from): the worker's start does this for cnp-server's
  // --preload-module, so that a module whose import outlasts CouchDB's timeout is imported
  // where no timeout ends it. A later import of it, or of its package's changed files, is the
  // one Load and Resolve do. INVALID_ARGUMENT, PERMISSION_DENIED or NOT_FOUND as Load's.
  absl::Status Preload(absl::string_view module);

  // What finds the closest existing name to one that was not found (name_suggestion.h), for the
  // errors of one resolve task. Never on the hot path: it lists modules.
  NameSuggester Suggester() const { return NameSuggester(policy_); }

  // While one is alive, a top-level package found unchanged on disk is not looked at again:
  // one Resolve task's names are checked against the disk once per package, not once per name
  // (4,096 missing names in a package of 2,000 imported files stat()ed 8 million files and
  // outran the call timeout: a security probe). Its names are all asked at once, so files
  // edited meanwhile are seen by the next task. Only around such a task, never around a direct
  // session (one task for all of CouchDB's lines, whose later lines must see the disk anew), and
  // never nested (the inner one's end would end the outer's).
  class TaskScope {
   public:
    explicit TaskScope(FunctionRegistry& registry) : registry_(registry) {
      registry_.in_task_ = true;
    }
    ~TaskScope() {
      registry_.in_task_ = false;
      registry_.unchanged_in_task_.clear();
    }
    TaskScope(const TaskScope&) = delete;
    TaskScope& operator=(const TaskScope&) = delete;

   private:
    FunctionRegistry& registry_;
  };

  // Changes whenever functions loaded before were dropped because their code changed on disk:
  // pointers returned before are then dangling, and a caller holding several must load again.
  uint64_t generation() const { return generation_; }

 private:
  // Imports the function (cached by path) and applies the policy; ignores any version. A name
  // not found is looked for once more if its package changed on disk (see ImportIfChanged for
  // `rate_limited`).
  absl::StatusOr<const LoadedFunction*> Import(const FunctionName& name, bool rate_limited);
  absl::StatusOr<LoadedFunction> ImportUncached(const FunctionName& name);
  // Checks the requested version against the loaded one, importing the package anew first
  // when they differ and its files changed (see ImportIfChanged for `rate_limited`).
  absl::StatusOr<const LoadedFunction*> CheckVersion(const FunctionName& name,
                                                     const LoadedFunction* loaded,
                                                     bool rate_limited);
  // If a file of the function's package changed since import: drops the package and every
  // function loaded from it, imports `name` from the code on disk, and returns that (nullopt
  // when nothing changed). When the new code does not import at all, the package and its
  // functions are kept as they were (and the error returned, and remembered until the files
  // change), so a broken edit fails only the names that need it. When `rate_limited`, looks at
  // most once a second per function and requested version, so a stale name sent again and
  // again costs nothing.
  std::optional<absl::StatusOr<const LoadedFunction*>> ImportIfChanged(
      const FunctionName& name, std::string own_module, bool rate_limited);
  const LoadedFunction* Store(const FunctionName& name, LoadedFunction loaded);
  // Remembers `failed` for `key` when the module's code raised (then `files` and what the import
  // read are stamped); returns it as the caller answers it.
  absl::Status RememberIfCodeRaised(const std::string& key, absl::Status failed,
                                    std::vector<std::string> files);

  ModulePolicy policy_;
  std::function<absl::Time()> clock_;
  SourceStamps stamps_;
  uint64_t generation_ = 0;
  std::unordered_map<std::string, std::unique_ptr<LoadedFunction>> by_path_;
  // Full names ("path|version") that loaded and matched: CouchDB sends one document per task,
  // so this lookup is all a repeated name costs. Bounded: names differ in spelling
  // ("|1", "| 1", "|01"), so it is cleared when full.
  std::unordered_map<std::string, const LoadedFunction*> by_name_;
  // When each "path|version" was last looked at for changes after a version mismatch.
  std::unordered_map<std::string, absl::Time> last_change_check_;
  // "path|version"s whose import failed because the code raised, until their files change.
  FailedImports failed_imports_;
  bool in_task_ = false;  // a TaskScope is alive
  std::set<std::string> unchanged_in_task_;  // top-level packages found unchanged in it
};

}  // namespace cnp::worker
