// "did you mean ...?" for a function name that does not resolve (a typo in `cnp check`, `cnp
// upload` or an add_fun): the closest existing name, by common/closest_name.h's rule.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "service/worker/function_name.h"
#include "service/worker/module_policy.h"
#include "service/worker/py_ref.h"

namespace cnp::worker {

// One per task, with the GIL held for its whole life (it keeps Python objects). What it lists to
// find a guess (the modules on the path or in a package, a module's callables) is listed once
// however many names of the task ask: a listing of the path takes milliseconds, and a Resolve of
// 1,000 misspelt top-level modules took 2.7 s of a worker's CPU listing it anew for each (100,000
// held a worker for the whole --call-timeout).
class NameSuggester {
 public:
  explicit NameSuggester(const ModulePolicy& policy) : policy_(policy) {}
  NameSuggester(const NameSuggester&) = delete;
  NameSuggester& operator=(const NameSuggester&) = delete;

  // When `name`'s module is imported and has no such attribute: the closest public function
  // defined in the module that passes ModulePolicy::CheckFunction. When a module on the way does not exist (no spec: not a module whose code failed,
  // which is no typo): the closest module beside it (in its package, or on the path for a
  // top-level one). Only a guess the policy would let through by its name (--allow-module
  // covers it; not the standard library, an installer, a dunder): the name as it would be
  // written, quoted, as a design document names it, and for a function seen with a @version
  // what a call adds ("\"myviews.townmap\" (@version(123): myviews.townmap|123 in a call)");
  // nullopt when nothing is close, and at once for a name refused by
  // its spelling (ModulePolicy::RefusesByName), which is not looked up at all. Imports
  // nothing but the standard library's pkgutil and importlib.util, and never leaves a Python
  // error set. For error paths only.
  std::optional<std::string> Suggest(const FunctionName& name);

  // What a message about `name` failing with `status` gains: "; did you mean \"GUESS\"?" for a
  // name not found or refused (a misspelt module is refused by --allow-module before it is
  // looked for, so refusals are asked too: the guess is only ever an allowed module, and a
  // module that exists, os, gets none) when Suggest has a guess; else "".
  std::string DidYouMean(const absl::Status& status, const FunctionName& name);

 private:
  // (index of the misspelt part of the dotted path, the names it could have meant), or nullopt.
  std::optional<std::pair<size_t, const std::vector<std::string>*>> Candidates(
      const FunctionName& name);

  // Whether the function `guess` names (in a module already imported) passes CheckFunction.
  bool PassesFunctionChecks(const FunctionName& guess) const;
  // The @version of the function `guess` names in a module already imported, if it has one.
  std::optional<int64_t> DeclaredVersionOf(const FunctionName& guess) const;

  const ModulePolicy& policy_;
  PyRef find_candidates_;  // the Python half, compiled for the first name asked about
  bool unavailable_ = false;  // it did not compile: no guesses
  PyRef listed_;  // a dict: what the Python half listed, by what it listed, kept for the task
  // listed_'s lists as C++ strings, by the list (alive in listed_ as long as this is).
  std::unordered_map<PyObject*, std::vector<std::string>> converted_;
};

}  // namespace cnp::worker
