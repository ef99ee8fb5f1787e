// Which functions the operator allows to be called.
//
// With --allow-module prefixes: the function's own __module__ (where it was defined, so a
// re-export like `from os import system` does not launder it) and the module path asked for
// must each equal a prefix or start with prefix + ".".
// Without any: both modules' files must live under a directory the operator put on the path
// (--python-path, PYTHONPATH, the virtualenv); the standard library and builtins never do.
// couch_named_python itself is never callable.
#pragma once

#include <Python.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "service/worker/interpreter.h"

namespace cnp::worker {

class ModulePolicy {
 public:
  ModulePolicy(std::vector<std::string> allowed_prefixes, CodeRoots roots);

  // OK, or PERMISSION_DENIED with a message that names the module and how to allow it.
  absl::Status Check(const std::string& function_path, const std::string& requested_module,
                     const std::string& own_module) const;

  // The part of Check that needs no import: couch_named_python's own modules are refused.
  absl::Status CheckNotOurs(const std::string& function_path, const std::string& module) const;

 private:
  bool AllowedByPrefix(const std::string& module) const;
  // Why `module` is not allowed by location, or empty when it is.
  std::string LocationProblem(const std::string& module) const;

  std::vector<std::string> allowed_prefixes_;
  CodeRoots roots_;
};

}  // namespace cnp::worker
