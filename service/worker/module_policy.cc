#include "service/worker/module_policy.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "service/worker/py_ref.h"

namespace cnp::worker {
namespace {

bool IsModuleOrSubmodule(const std::string& module, const std::string& prefix) {
  return module == prefix || absl::StartsWith(module, absl::StrCat(prefix, "."));
}

bool IsInside(const std::string& path, const std::string& dir) {
  return path == dir || (absl::StartsWith(path, dir) &&
                         (dir.back() == '/' || path[dir.size()] == '/'));
}

// The real path of the file a loaded module came from; empty for builtins and the like.
std::string ModuleFile(const std::string& module) {
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  PyObject* loaded = PyDict_GetItemString(modules, module.c_str());  // borrowed
  if (loaded == nullptr) return "";
  PyRef file = PyRef::Steal(PyObject_GetAttrString(loaded, "__file__"));
  if (!file || !PyUnicode_Check(file.get())) {
    PyErr_Clear();
    return "";
  }
  PyRef bytes = PyRef::Steal(PyUnicode_EncodeFSDefault(file.get()));
  if (!bytes) {
    PyErr_Clear();
    return "";
  }
  std::error_code error;
  std::filesystem::path real = std::filesystem::weakly_canonical(PyBytes_AS_STRING(bytes.get()), error);
  return error ? std::string(PyBytes_AS_STRING(bytes.get())) : real.string();
}

}  // namespace

ModulePolicy::ModulePolicy(std::vector<std::string> allowed_prefixes, CodeRoots roots)
    : allowed_prefixes_(std::move(allowed_prefixes)), roots_(std::move(roots)) {}

bool ModulePolicy::AllowedByPrefix(const std::string& module) const {
  for (const std::string& prefix : allowed_prefixes_) {
    if (IsModuleOrSubmodule(module, prefix)) return true;
  }
  return false;
}

std::string ModulePolicy::LocationProblem(const std::string& module) const {
  std::string file = ModuleFile(module);
  if (file.empty()) return "is built into Python (it has no file)";
  // The most specific root wins, so an operator directory inside the standard library's tree
  // still counts, and the standard library never does.
  size_t best_operator = 0, best_stdlib = 0;
  for (const std::string& dir : roots_.operator_dirs) {
    if (IsInside(file, dir)) best_operator = std::max(best_operator, dir.size());
  }
  for (const std::string& dir : roots_.stdlib_dirs) {
    if (IsInside(file, dir)) best_stdlib = std::max(best_stdlib, dir.size());
  }
  if (best_operator > best_stdlib) return "";
  if (best_stdlib > 0) return absl::StrCat("is part of the standard library (", file, ")");
  return absl::StrCat("is not under --python-path, PYTHONPATH or --virtualenv (", file, ")");
}

absl::Status ModulePolicy::CheckNotOurs(const std::string& function_path,
                                        const std::string& module) const {
  if (IsModuleOrSubmodule(module, "couch_named_python") || module == "_cnp") {
    return absl::PermissionDeniedError(absl::StrCat(
        "PermissionError: ", function_path, " belongs to couch_named_python, whose helpers "
        "are not functions CouchDB may call"));
  }
  return absl::OkStatus();
}

absl::Status ModulePolicy::Check(const std::string& function_path,
                                 const std::string& requested_module,
                                 const std::string& own_module) const {
  for (const std::string* module : {&requested_module, &own_module}) {
    if (absl::Status s = CheckNotOurs(function_path, *module); !s.ok()) return s;
  }
  for (const std::string* module : {&own_module, &requested_module}) {
    if (!allowed_prefixes_.empty()) {
      if (!AllowedByPrefix(*module)) {
        return absl::PermissionDeniedError(absl::StrCat(
            "PermissionError: ", function_path, " is not allowed: module '", *module,
            "' is not covered by --allow-module (", absl::StrJoin(allowed_prefixes_, ", "),
            "); start cnp-worker with --allow-module=", *module, " to allow it"));
      }
      continue;
    }
    if (std::string problem = LocationProblem(*module); !problem.empty()) {
      return absl::PermissionDeniedError(absl::StrCat(
          "PermissionError: ", function_path, " is not allowed: module '", *module, "' ",
          problem, "; put it in a --python-path directory or allow it with --allow-module=",
          *module));
    }
  }
  return absl::OkStatus();
}

}  // namespace cnp::worker
