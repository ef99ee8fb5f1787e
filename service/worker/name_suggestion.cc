#include "service/worker/name_suggestion.h"

#include <Python.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/closest_name.h"
#include "service/worker/py_text.h"

namespace cnp::worker {
namespace {

// (index of the misspelt part of the dotted path, the names it could have meant), or None.
// A module's candidates are the functions defined in it (their __module__ is it): what it
// imported (`from os import system`), classes, builtins and other callables are refused when
// called (ModulePolicy::CheckFunction), and a guess must not name them, nor list to any
// caller what the module imports. A module that exists (find_spec finds it) but is not
// imported failed in its own code: that is no misspelling, and gets no guess. Each listing is
// kept in `listed` (the same list object for the same listing, so the caller may convert it
// once).
constexpr char kCandidates[] = R"PY(
def candidates(module, attribute, listed):
    import importlib.util, pkgutil, sys, types
    parts = module.split(".")
    found = sys.modules.get(module)
    if found is not None:
        names = getattr(found, "__dict__", None)
        if not isinstance(names, dict) or attribute in names:
            return None
        key = ("functions", module)
        if key not in listed:
            listed[key] = [k for k, v in names.items()
                           if isinstance(k, str) and not k.startswith("_")
                           and isinstance(v, types.FunctionType)
                           and getattr(v, "__module__", None) == module]
        return (len(parts), listed[key])
    for i in range(len(parts)):
        prefix = ".".join(parts[:i + 1])
        if prefix in sys.modules:
            continue
        if importlib.util.find_spec(prefix) is not None:
            return None
        path = None
        if i > 0:
            path = getattr(sys.modules.get(".".join(parts[:i])), "__path__", None)
            if path is None:
                return None
        key = ("modules", None if path is None else tuple(path))
        if key not in listed:
            listed[key] = [n for _, n, _ in pkgutil.iter_modules(path)]
        return (i, listed[key])
    return None
)PY";

// The snippet's function, or an empty PyRef (and no Python error left set).
PyRef CompileCandidates() {
  PyRef globals = PyRef::Steal(PyDict_New());
  if (!globals || PyDict_SetItemString(globals.get(), "__builtins__", PyEval_GetBuiltins()) != 0) {
    PyErr_Clear();
    return PyRef();
  }
  PyRef ran = PyRef::Steal(PyRun_String(kCandidates, Py_file_input, globals.get(), globals.get()));
  PyObject* function = ran ? PyDict_GetItemString(globals.get(), "candidates") : nullptr;
  if (function == nullptr) PyErr_Clear();
  return PyRef::Borrow(function);
}

}  // namespace

std::optional<std::pair<size_t, const std::vector<std::string>*>> NameSuggester::Candidates(
    const FunctionName& name) {
  if (unavailable_) return std::nullopt;
  if (!find_candidates_) {
    find_candidates_ = CompileCandidates();
    listed_ = PyRef::Steal(PyDict_New());
    if (!find_candidates_ || !listed_) {
      PyErr_Clear();
      unavailable_ = true;
      return std::nullopt;
    }
  }
  PyRef found = PyRef::Steal(PyObject_CallFunction(find_candidates_.get(), "ssO",
                                                   name.module.c_str(), name.attribute.c_str(),
                                                   listed_.get()));
  if (!found || !PyTuple_Check(found.get()) || PyTuple_GET_SIZE(found.get()) != 2) {
    PyErr_Clear();
    return std::nullopt;
  }
  const Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(found.get(), 0));
  PyObject* names = PyTuple_GET_ITEM(found.get(), 1);
  if (index < 0 || !PyList_Check(names)) {
    PyErr_Clear();
    return std::nullopt;
  }
  auto [converted, fresh] = converted_.try_emplace(names);
  if (fresh) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); ++i) {
      converted->second.push_back(Utf8Text(PyList_GET_ITEM(names, i)));
    }
  }
  return std::make_pair(static_cast<size_t>(index), &converted->second);
}

bool NameSuggester::PassesFunctionChecks(const FunctionName& guess) const {
  // Read from the module's own namespace, as the listing was: no __getattr__ of the module's
  // runs for a guess.
  PyObject* module = PyDict_GetItemString(PyImport_GetModuleDict(), guess.module.c_str());
  if (module == nullptr || !PyModule_Check(module)) return false;
  PyObject* function = PyDict_GetItemString(PyModule_GetDict(module), guess.attribute.c_str());
  const bool passes = function != nullptr && policy_.CheckFunction(guess, function).ok();
  PyErr_Clear();
  return passes;
}

std::optional<int64_t> NameSuggester::DeclaredVersionOf(const FunctionName& guess) const {
  PyObject* module = PyDict_GetItemString(PyImport_GetModuleDict(), guess.module.c_str());
  PyObject* function = module != nullptr && PyModule_Check(module)
                           ? PyDict_GetItemString(PyModule_GetDict(module), guess.attribute.c_str())
                           : nullptr;
  // A plain function (PassesFunctionChecks): reading its attribute runs no code of the module's.
  PyRef version = function != nullptr && PyFunction_Check(function)
                      ? PyRef::Steal(PyObject_GetAttrString(function, "_cnp_version"))
                      : PyRef();
  std::optional<int64_t> declared;
  if (version && PyLong_Check(version.get())) {
    const long long value = PyLong_AsLongLong(version.get());
    if (!(value == -1 && PyErr_Occurred())) declared = value;
  }
  PyErr_Clear();
  return declared;
}

std::string NameSuggester::DidYouMean(const absl::Status& status, const FunctionName& name) {
  if (!absl::IsNotFound(status) && !absl::IsPermissionDenied(status)) return "";
  std::optional<std::string> meant = Suggest(name);
  return meant ? absl::StrCat("; did you mean ", *meant, "?") : "";
}

std::optional<std::string> NameSuggester::Suggest(const FunctionName& name) {
  // Before any lookup: finding out whether `distutils` exists runs a virtualenv's shim.
  if (policy_.RefusesByName(name)) return std::nullopt;
  std::optional<std::pair<size_t, const std::vector<std::string>*>> found = Candidates(name);
  if (!found.has_value()) return std::nullopt;
  std::vector<std::string> parts = absl::StrSplit(name.path, '.');
  const auto& [index, candidates] = *found;
  if (index >= parts.size()) return std::nullopt;
  std::optional<std::string> meant = ClosestName(parts[index], *candidates);
  if (!meant.has_value()) return std::nullopt;
  parts[index] = *meant;
  // Only a name that may be run is worth naming: not `os.system` for `oss.system`, nor for
  // `os.systen` a callable of a module --allow-module leaves out.
  FunctionName guess{absl::StrJoin(parts, "."), absl::StrJoin(parts.begin(), parts.end() - 1, "."),
                     parts.back(), name.version};
  if (!policy_.AllowsModuleName(guess.module) || policy_.RefusesByName(guess)) {
    return std::nullopt;
  }
  // A function of the module's: named only if calling it would pass every check. So is a
  // module's, when that module is imported already: `myviews.f` is no guess for `myviewsx.f`
  // if myviews has no f. (One not imported is not imported for a guess: its import runs code.)
  const bool module_imported =
      PyDict_GetItemString(PyImport_GetModuleDict(), guess.module.c_str()) != nullptr;
  const bool function_seen = index + 1 == parts.size() || module_imported;
  if (function_seen && !PassesFunctionChecks(guess)) return std::nullopt;
  // A function seen is named as a design document's YAML names it, with what a call must add:
  // `myviews.townmp` was told "myviews.townmap", which then failed for its missing |123 (an
  // operator's trial), and "myviews.townmap|123" was wrong for YAML (a review). One not seen
  // (its module not imported, which a guess does not do) has no version known to add.
  const std::optional<int64_t> declared =
      function_seen ? DeclaredVersionOf(guess) : std::nullopt;
  if (!declared.has_value()) return absl::StrCat("\"", guess.path, "\"");
  return absl::StrCat("\"", guess.path, "\" (@version(", *declared, "): ", guess.path, "|",
                      *declared, " in a call)");
}

}  // namespace cnp::worker
