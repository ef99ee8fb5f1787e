// The embedded CPython: started once per worker process, isolated from the user's environment.
//
// sys.path is exactly: the standard library, the couch_named_python package directory, the
// --python-path directories, PYTHONPATH, and the virtualenv's site-packages (with its .pth
// files). Not the current directory, not the user's site-packages, not Debian's dist-packages.
// Each of those directories, and every directory above it, must be writable by nobody but this
// user and root (common/code_directory.h), or the worker does not start; and every file Python
// reads code from (sources, bytecode caches, bare .pyc files, .pth files, extension modules
// and their directories) must be too (code_file_guard.h).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cnp::worker {

struct InterpreterOptions {
  std::string package_dir;                // holds couch_named_python/
  std::vector<std::string> python_paths;  // --python-path, in order
  std::string virtualenv;                 // --virtualenv, may be empty
};

// Where Python code may come from, for the module policy. Each directory is listed as written
// (made absolute) and as resolved.
struct CodeRoots {
  // The operator's own code: --python-path and PYTHONPATH entries that are not library dirs.
  std::vector<std::string> operator_dirs;
  // Installed packages: the virtualenv's site-packages and what its .pth files add, and any
  // --python-path or PYTHONPATH entry that is a site-packages or dist-packages directory (by
  // name, or as the interpreter's site module reports them). Their modules run only when
  // --allow-module names them.
  std::vector<std::string> library_dirs;
  // Inside the operator's directories, what an installer put there (pip install --target):
  // the top-level packages and modules its records name (installed_distributions.h). Library
  // code, as a library directory's is.
  std::vector<std::string> installed_in_operator_dirs;
  std::vector<std::string> stdlib_dirs;  // the standard library
};

// Starts the interpreter (at most once per process) and imports couch_named_python, so a
// broken installation fails here rather than on the first call. The GIL stays held by the
// calling thread. Also sends Python's sys.stdout to stderr: a stray print() in user code must
// not end up anywhere it can corrupt.
absl::StatusOr<CodeRoots> StartInterpreter(const InterpreterOptions& options);

// Finds the couch_named_python package directory for the running executable:
// $CNP_PYTHON_PACKAGE_DIR, then the Bazel runfiles the executable runs from
// (<exe>.runfiles/cnp/service/python, or the runfiles tree `argv0` lies in when another
// binary runs it from its own runfiles, or $RUNFILES_DIR), then <exe dir>/../share/cnp/python.
absl::StatusOr<std::string> FindPackageDir(const char* argv0 = nullptr);

}  // namespace cnp::worker
