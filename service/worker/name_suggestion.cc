#include "service/worker/name_suggestion.h"

#include <Python.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/closest_name.h"
#include "service/worker/py_ref.h"
#include "service/worker/py_text.h"

namespace cnp::worker {
namespace {

// (index of the misspelt part of the dotted path, the names it could have meant), or None.
// A module that exists (find_spec finds it) but is not imported failed in its own code: that
// is no misspelling, and gets no guess.
constexpr char kCandidates[] = R"PY(
def candidates(module, attribute):
    import importlib.util, pkgutil, sys
    parts = module.split(".")
    found = sys.modules.get(module)
    if found is not None:
        names = getattr(found, "__dict__", None)
        if not isinstance(names, dict) or attribute in names:
            return None
        return (len(parts), [k for k, v in names.items()
                             if isinstance(k, str) and not k.startswith("_") and callable(v)])
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
        return (i, [n for _, n, _ in pkgutil.iter_modules(path)])
    return None
)PY";

// The candidates the snippet finds, or nullopt (and no Python error left set).
std::optional<std::pair<size_t, std::vector<std::string>>> Candidates(const FunctionName& name) {
  PyRef globals = PyRef::Steal(PyDict_New());
  if (!globals || PyDict_SetItemString(globals.get(), "__builtins__", PyEval_GetBuiltins()) != 0) {
    PyErr_Clear();
    return std::nullopt;
  }
  PyRef ran = PyRef::Steal(PyRun_String(kCandidates, Py_file_input, globals.get(), globals.get()));
  PyObject* function = ran ? PyDict_GetItemString(globals.get(), "candidates") : nullptr;
  PyRef found = function == nullptr ? PyRef()
                                    : PyRef::Steal(PyObject_CallFunction(
                                          function, "ss", name.module.c_str(),
                                          name.attribute.c_str()));
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
  std::vector<std::string> candidates;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); ++i) {
    candidates.push_back(Utf8Text(PyList_GET_ITEM(names, i)));
  }
  return std::make_pair(static_cast<size_t>(index), std::move(candidates));
}

}  // namespace

std::optional<std::string> SuggestFunctionName(const FunctionName& name,
                                               const ModulePolicy& policy) {
  std::optional<std::pair<size_t, std::vector<std::string>>> found = Candidates(name);
  if (!found.has_value()) return std::nullopt;
  std::vector<std::string> parts = absl::StrSplit(name.path, '.');
  const auto& [index, candidates] = *found;
  if (index >= parts.size()) return std::nullopt;
  std::optional<std::string> meant = ClosestName(parts[index], candidates);
  if (!meant.has_value()) return std::nullopt;
  parts[index] = *meant;
  if (index + 1 < parts.size()) {
    // A module: only one that may be run is worth naming.
    const std::vector<std::string> module(parts.begin(), parts.end() - 1);
    if (!policy.AllowsModuleName(absl::StrJoin(module, "."))) return std::nullopt;
  }
  std::string suggestion = absl::StrJoin(parts, ".");
  if (name.version.has_value()) absl::StrAppend(&suggestion, "|", *name.version);
  return suggestion;
}

}  // namespace cnp::worker
