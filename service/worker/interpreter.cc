#include "service/worker/interpreter.h"

#include <Python.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/code_directories.h"
#include "common/code_directory.h"
#include "service/common/log.h"
#include "service/worker/builtin_module.h"
#include "service/worker/code_file_guard.h"
#include "service/worker/installed_distributions.h"
#include "service/worker/py_ref.h"
#include "service/worker/user_exception.h"

namespace cnp::worker {
namespace {

namespace fs = std::filesystem;

// A directory as written (made absolute) and as resolved: a module reached through either is
// inside it. Bazel runfiles, for one, are symlinks into the source tree.
void AddRoot(const std::string& dir, std::vector<std::string>& roots) {
  std::error_code error;
  fs::path absolute = fs::absolute(dir, error).lexically_normal();
  roots.push_back(absolute.string());
  fs::path real = fs::weakly_canonical(absolute, error);
  if (!error && real != absolute) roots.push_back(real.string());
}

bool HasPackage(const fs::path& dir) {
  std::error_code error;
  return fs::is_regular_file(dir / "couch_named_python" / "__init__.py", error);
}

absl::Status PythonError(absl::string_view doing) {
  UserException e = TakeException();
  return absl::InternalError(absl::StrCat(doing, ": ", e.Summary()));
}

absl::Status AppendToSysPath(const std::string& dir) {
  PyObject* sys_path = PySys_GetObject("path");  // borrowed
  PyRef entry = PyRef::Steal(PyUnicode_DecodeFSDefault(dir.c_str()));
  if (!entry || sys_path == nullptr || PyList_Append(sys_path, entry.get()) != 0) {
    return PythonError(absl::StrCat("adding ", dir, " to sys.path"));
  }
  return absl::OkStatus();
}

std::vector<std::string> SysPathFrom(size_t first) {
  std::vector<std::string> entries;
  PyObject* sys_path = PySys_GetObject("path");
  for (Py_ssize_t i = first; sys_path != nullptr && i < PyList_GET_SIZE(sys_path); ++i) {
    PyRef bytes = PyRef::Steal(PyUnicode_EncodeFSDefault(PyList_GET_ITEM(sys_path, i)));
    if (bytes) entries.push_back(PyBytes_AS_STRING(bytes.get()));
  }
  PyErr_Clear();
  return entries;
}

// The directories the interpreter's site module would install packages into (Debian's
// dist-packages, the user's site-packages), as written and resolved; site.main() is not run.
std::vector<std::string> SitePackageDirs() {
  std::vector<std::string> dirs;
  PyRef site = PyRef::Steal(PyImport_ImportModule("site"));
  for (const char* function : {"getsitepackages", "getusersitepackages"}) {
    PyRef found = site ? PyRef::Steal(PyObject_CallMethod(site.get(), function, nullptr)) : PyRef();
    if (found && PyUnicode_Check(found.get())) {
      found = PyRef::Steal(PyTuple_Pack(1, found.get()));
    }
    PyRef list = found ? PyRef::Steal(PySequence_List(found.get())) : PyRef();
    for (Py_ssize_t i = 0; list && i < PyList_GET_SIZE(list.get()); ++i) {
      PyRef bytes = PyRef::Steal(PyUnicode_EncodeFSDefault(PyList_GET_ITEM(list.get(), i)));
      if (bytes) AddRoot(PyBytes_AS_STRING(bytes.get()), dirs);
    }
    PyErr_Clear();
  }
  return dirs;
}

// Whether `dir` holds installed packages rather than the operator's own modules: it is, or
// lies inside, a directory named site-packages or dist-packages, or one the site module
// reports. Such packages (pip, setuptools, whatever the distribution installed) are libraries
// the operator's functions use, not functions CouchDB may call.
bool IsLibraryDir(const std::string& dir, const std::vector<std::string>& site_dirs) {
  std::vector<std::string> spellings;
  AddRoot(dir, spellings);
  for (const std::string& spelling : spellings) {
    for (const fs::path& part : fs::path(spelling)) {
      if (part == "site-packages" || part == "dist-packages") return true;
    }
    for (const std::string& site_dir : site_dirs) {
      if (spelling == site_dir ||
          absl::StartsWith(spelling, absl::StrCat(absl::StripSuffix(site_dir, "/"), "/"))) {
        return true;
      }
    }
  }
  return false;
}

// A virtualenv's site-packages go in the way site.py adds them, so .pth files (editable
// installs) work. Every directory that adds is a library dir: a virtualenv always holds pip
// and setuptools, whose plain functions run programs. The operator's own code in a
// virtualenv goes on --python-path.
absl::Status AddVirtualenv(const std::string& virtualenv, CodeRoots& roots) {
  std::string site_packages = absl::StrCat(virtualenv, "/lib/python", PY_MAJOR_VERSION, ".",
                                           PY_MINOR_VERSION, "/site-packages");
  std::error_code error;
  if (!fs::is_directory(site_packages, error)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--virtualenv=", virtualenv, ": ", site_packages,
        " is not a directory (is it a Python ", PY_MAJOR_VERSION, ".", PY_MINOR_VERSION,
        " virtualenv?)"));
  }
  // Before addsitedir, which runs the `import` lines of the .pth files in it.
  if (absl::Status s = CheckCodeDirectory(site_packages, "--virtualenv"); !s.ok()) return s;
  size_t before = PyList_GET_SIZE(PySys_GetObject("path"));
  PyRef site = PyRef::Steal(PyImport_ImportModule("site"));
  PyRef result = site ? PyRef::Steal(PyObject_CallMethod(site.get(), "addsitedir", "s",
                                                         site_packages.c_str()))
                      : PyRef();
  if (!result) return PythonError(absl::StrCat("adding the virtualenv ", site_packages));
  for (const std::string& dir : SysPathFrom(before)) {
    if (absl::Status s = CheckCodeDirectory(dir, "a .pth file of --virtualenv added");
        !s.ok()) {
      return s;
    }
    AddRoot(dir, roots.library_dirs);
  }
  return absl::OkStatus();
}

// Every document makes a few container objects, so the cycle collector's default young
// generation (700 allocations) runs every couple of hundred documents, and its older
// generations rescan everything imported at startup. Freezing the startup objects and a
// larger young generation measured about 20% off the map hot path; reference counting still
// frees documents at once, only cycles wait a little longer.
absl::Status TuneGarbageCollector() {
  PyRef gc = PyRef::Steal(PyImport_ImportModule("gc"));
  PyRef set = gc ? PyRef::Steal(PyObject_CallMethod(gc.get(), "set_threshold", "iii", 10000, 10, 10))
                 : PyRef();
  PyRef frozen = set ? PyRef::Steal(PyObject_CallMethod(gc.get(), "freeze", nullptr)) : PyRef();
  if (!frozen) return PythonError("tuning the garbage collector");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> FindPackageDir(const char* argv0) {
  if (const char* dir = std::getenv("CNP_PYTHON_PACKAGE_DIR"); dir != nullptr && *dir) {
    if (!HasPackage(dir)) {
      return absl::NotFoundError(absl::StrCat("CNP_PYTHON_PACKAGE_DIR=", dir,
                                              " has no couch_named_python/__init__.py"));
    }
    return std::string(dir);
  }
  std::error_code error;
  fs::path exe = fs::read_symlink("/proc/self/exe", error);
  std::vector<fs::path> candidates;
  // The runfiles tree we were started from comes first: a test's own tree is complete when the
  // test starts, while the binary's own tree (exe.runfiles) may still be being laid out by a
  // concurrent build, with __init__.py there and a newer module not yet.
  if (const char* runfiles = std::getenv("RUNFILES_DIR"); runfiles != nullptr && *runfiles) {
    candidates.push_back(fs::path(runfiles) / "cnp/service/python");
  }
  if (argv0 != nullptr) {
    std::string invoked = argv0;
    if (size_t at = invoked.rfind(".runfiles/"); at != std::string::npos) {
      candidates.push_back(fs::path(invoked.substr(0, at + 9)) / "cnp/service/python");
    }
  }
  if (!error) candidates.push_back(fs::path(exe.string() + ".runfiles") / "cnp/service/python");
  if (!error) candidates.push_back(exe.parent_path() / "../share/cnp/python");
  std::string tried;
  for (const fs::path& dir : candidates) {
    if (HasPackage(dir)) return fs::weakly_canonical(dir, error).string();
    absl::StrAppend(&tried, tried.empty() ? "" : ", ", dir.string());
  }
  return absl::NotFoundError(absl::StrCat(
      "cannot find the couch_named_python package (looked in ", tried,
      "); set CNP_PYTHON_PACKAGE_DIR to the directory that contains it"));
}

absl::StatusOr<CodeRoots> StartInterpreter(const InterpreterOptions& options) {
  if (Py_IsInitialized()) return absl::FailedPreconditionError("Python is already running");
  RegisterBuiltinModule();
  // Before anything is imported: the virtualenv's .pth files and their imports included.
  if (absl::Status s = InstallCodeFileGuard(); !s.ok()) return s;

  PyConfig config;
  PyConfig_InitIsolatedConfig(&config);  // no PYTHON* variables, no user site, no cwd on path
  config.site_import = 0;                // no dist-packages either: only what the operator names
  config.write_bytecode = 0;             // never write into the operator's directories
                                         // (and never make a cache code_file_guard.h refuses)
  config.install_signal_handlers = 0;    // the worker's signals keep their default meaning
  config.parse_argv = 0;
  PyStatus status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status)) {
    return absl::InternalError(absl::StrCat("starting Python failed: ",
                                            status.err_msg ? status.err_msg : "unknown error"));
  }
  if (absl::Status s = GuardLoadersWithoutOpenCode(); !s.ok()) return s;

  CodeRoots roots;
  for (const std::string& dir : SysPathFrom(0)) AddRoot(dir, roots.stdlib_dirs);

  if (absl::Status s = AppendToSysPath(options.package_dir); !s.ok()) return s;
  // The same list cnp-server checked at start, checked again: a directory may have changed.
  const std::vector<CodeDirectory> code_dirs =
      CodeDirectories(options.python_paths, std::getenv("PYTHONPATH"), options.virtualenv);
  if (absl::Status s = CheckCodeDirectories(code_dirs); !s.ok()) return s;
  const std::vector<std::string> site_dirs = SitePackageDirs();
  for (const CodeDirectory& dir : code_dirs) {
    if (dir.source == CodeSource::kVirtualenv) {
      if (absl::Status s = AddVirtualenv(dir.path, roots); !s.ok()) return s;
      continue;
    }
    if (absl::Status s = AppendToSysPath(dir.path); !s.ok()) return s;
    if (IsLibraryDir(dir.path, site_dirs)) {
      AddRoot(dir.path, roots.library_dirs);
      continue;
    }
    AddRoot(dir.path, roots.operator_dirs);
    for (const std::string& installed : InstalledTopLevels(dir.path)) {
      AddRoot(installed, roots.installed_in_operator_dirs);
    }
  }

  if (PySys_SetObject("stdout", PySys_GetObject("stderr")) != 0) {
    return PythonError("sending sys.stdout to stderr");
  }
  PyRef package = PyRef::Steal(PyImport_ImportModule("couch_named_python"));
  if (!package) {
    return PythonError(absl::StrCat("importing couch_named_python from ", options.package_dir));
  }
  // What functions print becomes events of the log, in either format: attributed, escaped
  // (a printed newline could forge a line of the server's own) and bounded per second, as
  // log() lines are.
  PyRef output = PyRef::Steal(PyImport_ImportModule("couch_named_python._output"));
  PyRef installed =
      output ? PyRef::Steal(PyObject_CallMethod(output.get(), "install", nullptr)) : PyRef();
  if (!installed) return PythonError("sending printed lines to the log");
  if (absl::Status s = TuneGarbageCollector(); !s.ok()) return s;
  SetOperatorDirectories(roots.operator_dirs);
  return roots;
}

}  // namespace cnp::worker
