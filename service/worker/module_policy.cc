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

// The file a loaded module came from, as Python found it and as resolved; empty for builtins.
std::vector<std::string> ModuleFiles(const std::string& module) {
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  PyObject* loaded = PyDict_GetItemString(modules, module.c_str());  // borrowed
  if (loaded == nullptr) return {};
  PyRef file = PyRef::Steal(PyObject_GetAttrString(loaded, "__file__"));
  PyRef bytes = file && PyUnicode_Check(file.get())
                    ? PyRef::Steal(PyUnicode_EncodeFSDefault(file.get()))
                    : PyRef();
  if (!bytes) {
    PyErr_Clear();
    return {};
  }
  std::error_code error;
  std::filesystem::path found =
      std::filesystem::absolute(PyBytes_AS_STRING(bytes.get()), error).lexically_normal();
  std::filesystem::path real = std::filesystem::weakly_canonical(found, error);
  if (error || real == found) return {found.string()};
  return {found.string(), real.string()};
}

// The length of the longest directory in `dirs` that holds `file`; 0 if none does.
size_t LongestRoot(const std::string& file, const std::vector<std::string>& dirs) {
  size_t best = 0;
  for (const std::string& dir : dirs) {
    if (IsInside(file, dir)) best = std::max(best, dir.size());
  }
  return best;
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
  std::vector<std::string> files = ModuleFiles(module);
  if (files.empty()) return "is built into Python (it has no file)";
  // The most specific root wins, so an operator directory inside the standard library's tree
  // still counts, and the standard library never does.
  bool in_stdlib = false;
  for (const std::string& file : files) {
    size_t best_operator = LongestRoot(file, roots_.operator_dirs);
    size_t best_stdlib = LongestRoot(file, roots_.stdlib_dirs);
    if (best_operator > best_stdlib) return "";
    in_stdlib = in_stdlib || best_stdlib > 0;
  }
  if (in_stdlib) return absl::StrCat("is part of the standard library (", files[0], ")");
  return absl::StrCat("is not under --python-path, PYTHONPATH or --virtualenv (", files[0], ")");
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
