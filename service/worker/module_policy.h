// Which functions the operator allows to be called, checked in two steps.
//
// Where code may come from (CodeRoots): the operator's directories (--python-path and
// PYTHONPATH entries), library directories (the virtualenv's site-packages and what its .pth
// files add, and any path entry that is a site-packages or dist-packages directory; inside an
// operator's directory, the packages an installer put there: installed_distributions.h), and
// the standard library. One rule for library directories: their modules run only when an
// --allow-module prefix names them; the operator's run without one (unless prefixes are
// given, then only those they cover). Never callable, whatever the roots and prefixes: the
// standard library and the packages that install or run software (NeverCallableReason), by
// the requested name, by the function's own __module__, and by where its file is: placed as
// imported and as resolved (symlinks followed), the stricter place decides, so a symlink in an
// operator's package to the standard library or a library is that code. The directory a module
// (or a package's __init__.py) is imported from must pass common/code_ownership.h's rule, as
// its file must: every package directory on the way is checked, not only the code directories.
//
// Before anything is imported (CheckBeforeImport): no dotted part is a dunder name
// (`myviews.__setattr__`, `unittest.__main__`) or private (`myviews._vendor.yaml`: vendored
// libraries live there), no module part is a script tools run (`setup`, `conftest`, `manage`:
// importing one runs it), the module is not couch_named_python's nor never callable, the module is covered by an --allow-module prefix (dot boundary) when any is
// given, and the module and each package above it would be loaded from a file under the
// operator's directories, or a library directory as above - found the way `import` finds it,
// without running its code, and never the standard library or a module built into Python.
//
// After the import (CheckFunction): the attribute is a Python function (types.FunctionType:
// no class, builtin, bound method or method wrapper), its own __module__ (where it was
// defined, so `from os import system` does not launder it) is a str covered by the prefixes,
// not couch_named_python's and not never callable, and its code comes from a file under the
// operator's directories or an allowed library module - or it is what one of
// couch_named_python's handler factories made (`couch_named_python.mr.item("town")`), bound in
// the very module the request named.
//
// Refusals are PERMISSION_DENIED saying which cnp-server flag would allow the function; the
// standard library and the software installers are never offered.
#pragma once

#include <Python.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "service/worker/function_name.h"
#include "service/worker/installed_distributions.h"
#include "service/worker/interpreter.h"
#include "service/worker/py_ref.h"

namespace cnp::worker {

class ModulePolicy {
 public:
  ModulePolicy(std::vector<std::string> allowed_prefixes, CodeRoots roots);

  // OK, PERMISSION_DENIED, or NOT_FOUND when the module (or a package above it) does not
  // exist. May import the packages above `name.module` once each has passed, never the
  // module itself.
  absl::Status CheckBeforeImport(const FunctionName& name) const;

  // OK or PERMISSION_DENIED (NOT_FOUND for something that is not callable at all).
  absl::Status CheckFunction(const FunctionName& name, PyObject* attribute) const;

  // Whether `file` lies under the operator's or a library directory, more specifically than
  // under the standard library's (an operator directory inside the standard library's tree
  // counts): code whose changes a worker picks up.
  bool IsUnderCodeRoots(const std::string& file) const;

  // Whether --allow-module covers `module` (every module when none was given): for a "did you
  // mean" (name_suggestion.h), which should not name a module the operator never allowed. The
  // full checks come when the name is used.
  bool AllowsModuleName(const std::string& module) const { return AllowedByPrefix(module); }

  // Whether `name` is refused by its spelling alone (RefusalByName): a dunder or private part,
  // a script module, couch_named_python's module, or a module that is never callable. Such a name gets no "did
  // you mean", and nothing about it is looked up: asked for `distutils`, a virtualenv's shim
  // imports setuptools.
  bool RefusesByName(const FunctionName& name) const;

 private:
  // CheckBeforeImport's first checks, those that need nothing looked up.
  absl::Status RefusalByName(const FunctionName& name) const;

  enum class Root { kNone, kOperator, kLibrary, kStdlib };
  struct Location {
    Root root = Root::kNone;
    std::string module;  // the dotted name the file has below `dir`
    std::string dir;     // the root it lies under
  };
  // Why something may not run (empty `why` when it may), and the advice for the refusal.
  struct Problem {
    std::string why;
    std::string advice;
  };

  bool AllowedByPrefix(const std::string& module) const;
  // Whether an --allow-module prefix covers `module` (none given covers nothing); with
  // `on_the_way`, a package above a prefix counts too (it is imported on the way).
  bool AllowedExplicitly(const std::string& module, bool on_the_way) const;
  Location Locate(const std::string& file) const;
  Location LocateSpelling(const std::string& spelling) const;
  // Why a module loaded from `spec` may not run.
  Problem SpecProblem(PyObject* spec, bool on_the_way) const;
  // Why code in `file` may not run.
  // Whether a file the walk to it cannot find passes (a function's co_filename) or not (what
  // an import found).
  enum class MissingFile { kRefused, kAllowed };
  Problem FileProblem(const std::string& file, bool on_the_way,
                      MissingFile missing = MissingFile::kRefused) const;
  absl::Status CheckLocation(const FunctionName& name, const std::string& module) const;
  absl::Status NeverCallable(const FunctionName& name, const std::string& module,
                             const std::string& whose) const;
  absl::Status NotAllowedByPrefix(const FunctionName& name, const std::string& module,
                                  const std::string& whose) const;
  // Whether `function` is what one of couch_named_python's handler factories made (its code
  // object is registered in couch_named_python._factory) and now belongs to the module it was
  // found in: then its code may live in the package rather than in the operator's files.
  bool IsFactoryProductOf(const FunctionName& name, PyObject* function,
                          const std::string& own_module) const;

  std::vector<std::string> allowed_prefixes_;
  CodeRoots roots_;
  // What installers put in the directories on the way to a file (read once per directory).
  mutable InstallRecords install_records_;
  mutable PyRef find_spec_;  // importlib.util.find_spec, imported on first use
  mutable PyRef product_codes_;  // couch_named_python._factory.PRODUCT_CODES, on first use
  mutable std::string package_dir_;  // the directory of couch_named_python's files, likewise
};

// The status for an import of `name`'s module (or of a package above it) that raised; takes
// the exception. PERMISSION_DENIED when the bytecode guard refused a file of code another user
// could change (code_file_guard.h), NOT_FOUND otherwise: "importing MODULE: " and the
// exception with where it was raised, and its traceback for the service's log.
absl::Status ImportFailed(const FunctionName& name);

// Whether `module` (or its top-level package) is part of Python's standard library or built
// into the interpreter, by sys.stdlib_module_names and sys.builtin_module_names.
bool IsStandardLibrary(const std::string& module);

// Why functions of `module` are never callable, whatever the directories and --allow-module
// say (`why` empty when they may be), and what the operator can do instead (`advice`, empty
// when nothing): its top-level package is in the standard library (os, subprocess,
// importlib, distutils, venv...) or installs or runs software (pip, setuptools,
// pkg_resources, _distutils_hack, wheel...).
struct ModuleRefusal {
  std::string why;
  std::string advice;
};
ModuleRefusal NeverCallableReason(const std::string& module);

}  // namespace cnp::worker
