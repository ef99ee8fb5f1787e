#include "service/worker/module_policy.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <optional>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "common/code_directory.h"
#include "common/code_ownership.h"
#include "service/worker/code_file_guard.h"
#include "service/worker/failed_imports.h"
#include "service/worker/installed_distributions.h"
#include "service/worker/py_text.h"
#include "service/worker/raised_log.h"
#include "service/worker/user_exception.h"

namespace cnp::worker {
namespace {

constexpr absl::string_view kPutItOnThePath =
    "put its file in a directory given to cnp-server --python-path";
constexpr absl::string_view kNeverStandardLibrary =
    "cnp-server never runs functions of the standard library";

// Top-level packages that install or run software, never callable whatever the directories and
// --allow-module say: a virtualenv always holds pip and setuptools, and their plain functions
// (setuptools._distutils.spawn.spawn) run any program. The standard library's own such
// modules (os, subprocess, shutil, pty, multiprocessing, ctypes, importlib, runpy, code,
// builtins, and distutils, ensurepip and venv, which a virtualenv's distutils-precedence.pth
// shim may resolve into setuptools) are refused by the standard-library rule, by name.
constexpr const char* kInstallsOrRunsSoftware[] = {
    "pip",        "setuptools", "pkg_resources", "_distutils_hack", "wheel",
    "virtualenv", "pipx",       "pexpect",       "ptyprocess",      "sh",
    "plumbum",
};

// Scripts that tools run as programs from a project's top directory (python setup.py,
// Django's manage.py, nox, fabric), and pytest's conftest.py wherever it is: importing one
// runs it, and none holds functions for CouchDB. A name that reaches one is refused before its
// import, as its top-level code would run even though no such function is there. A submodule
// named so inside a package (accounts.manage) is an ordinary module.
constexpr const char* kTopLevelScripts[] = {"setup", "manage", "noxfile", "fabfile"};
// activate_this: a virtualenv's script, which adds the virtualenv's packages to sys.path when
// imported (a review made yaml callable through `pyenv.bin.activate_this.x`).
constexpr const char* kScriptsAnywhere[] = {"conftest", "activate_this"};

// The first dotted part of `path` for which `matches(part, is_first)` holds; empty if none.
template <class Matches>
std::string FirstPart(const std::string& path, Matches matches) {
  bool first = true;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    if (matches(part, first)) return std::string(part);
    first = false;
  }
  return "";
}

bool IsOneOf(absl::string_view part, absl::Span<const char* const> names) {
  return std::find(names.begin(), names.end(), part) != names.end();
}

// The first part of `path` that starts with '_' and is no dunder (those are refused on their
// own, `__x` is private too); empty when there is none. The mark Python gives what is private
// to its module or package, and where vendored libraries live (pip._vendor, or
// myviews._vendor.yaml, whose yaml.unsafe_load runs shell commands).
std::string PrivatePart(const std::string& path) {
  return FirstPart(path, [](absl::string_view part, bool) {
    return absl::StartsWith(part, "_") && !IsDunder(part);
  });
}

// The part of `module` that names a script (kTopLevelScripts first, kScriptsAnywhere at any
// depth); empty if none.
std::string ScriptPart(const std::string& module) {
  return FirstPart(module, [](absl::string_view part, bool first) {
    return IsOneOf(part, kScriptsAnywhere) || (first && IsOneOf(part, kTopLevelScripts));
  });
}

// Where vendored libraries live: a module below one of these is a copy of someone else's
// library, whatever public module re-exports its functions (`from ._vendor.yaml import
// unsafe_load`). A private module of the operator's own (`myviews._impl`, re-exported by
// `myviews`) is the usual layout of a package, and stays callable through its public name.
// (A review ran yaml.unsafe_load copied to myviews/extern; `extern` is the name setuptools and
// pkg_resources bundle their dependencies under. Names an operator's own modules may well have,
// lib or deps, are not here: a library installed there is found by its installer's record.)
constexpr const char* kVendorDirectories[] = {
    "_vendor",     "_vendored",  "vendor",     "vendored",      "_third_party", "third_party",
    "_thirdparty", "thirdparty", "_externals", "externals",     "_external",    "external",
    "_extern",     "extern",     "_bundled",   "bundled",       "site_packages"};

std::string VendoredPart(const std::string& module) {
  return FirstPart(module, [](absl::string_view part, bool) {
    return IsOneOf(part, kVendorDirectories);
  });
}

bool IsModuleOrSubmodule(const std::string& module, const std::string& prefix) {
  return module == prefix || absl::StartsWith(module, absl::StrCat(prefix, "."));
}

bool IsOurs(const std::string& module) {
  return IsModuleOrSubmodule(module, "couch_named_python") || module == "_cnp";
}

bool IsInside(const std::string& path, const std::string& dir) {
  return path == dir || (absl::StartsWith(path, dir) &&
                         (dir.back() == '/' || path[dir.size()] == '/'));
}

// The longest directory in `dirs` that holds `file`; empty if none does.
std::string LongestRoot(const std::string& file, const std::vector<std::string>& dirs) {
  std::string best;
  for (const std::string& dir : dirs) {
    if (IsInside(file, dir) && dir.size() > best.size()) best = dir;
  }
  return best;
}

// The dotted module name `file` has below `root`, whatever name it was imported by:
// <root>/setuptools/_distutils/spawn.py is setuptools._distutils.spawn, even when the
// distutils-precedence.pth shim made it distutils.spawn.
std::string ModuleNameBelow(const std::string& file, const std::string& root) {
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(absl::string_view(file).substr(root.size()), '/',
                                               absl::SkipEmpty())) {
    parts.emplace_back(part);
  }
  if (parts.empty()) return "";
  std::string& last = parts.back();
  last = last.substr(0, last.find('.'));  // spawn.py, _speedups.cpython-311-x86_64-linux-gnu.so
  if (last == "__init__") parts.pop_back();
  return absl::StrJoin(parts, ".");
}

// Why another user could change the code in `file` (or, for a namespace package, add to the
// directory), or nothing. The directories above it were checked when the worker started
// (common/code_directory.h); a file is checked each time it is about to be imported, so an
// edited module (picked up without a restart) is checked again, and when a function of it is
// loaded.
std::optional<OwnershipProblem> WritableByOthers(const std::string& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return std::nullopt;  // gone: the import fails on its own
  return OthersCanChange(file, st);
}

// `file` made absolute, as written and as resolved (symlinks, such as Bazel runfiles).
std::vector<std::string> Spellings(const std::string& file) {
  std::error_code error;
  std::filesystem::path found = std::filesystem::absolute(file, error).lexically_normal();
  std::filesystem::path real = std::filesystem::weakly_canonical(found, error);
  if (error || real == found) return {found.string()};
  return {found.string(), real.string()};
}

// An attribute of a spec or code object; empty when missing or not a str.
std::string StrAttribute(PyObject* object, const char* attribute) {
  PyRef value = PyRef::Steal(PyObject_GetAttrString(object, attribute));
  if (!value || !PyUnicode_Check(value.get())) {
    PyErr_Clear();
    return "";
  }
  PyRef bytes = PyRef::Steal(PyUnicode_EncodeFSDefault(value.get()));
  if (!bytes) {
    PyErr_Clear();
    return "";
  }
  return std::string(PyBytes_AS_STRING(bytes.get()), PyBytes_GET_SIZE(bytes.get()));
}

absl::Status Denied(const FunctionName& name, absl::string_view why, absl::string_view advice) {
  return absl::PermissionDeniedError(absl::StrCat("PermissionError: ", name.path,
                                                  " is not allowed: ", why,
                                                  advice.empty() ? "" : "; ", advice));
}

enum class Naming { kRequested, kWhereItIs };

// Refused for its module: a script's, or a private one as requested (`myviews._vendor.x`), or
// a vendored library's where the function really is. `whose` says which module: the one
// requested, or the function's own.
absl::Status PrivateOrScript(const FunctionName& name, const std::string& module,
                             absl::string_view whose, Naming naming = Naming::kRequested) {
  if (std::string script = ScriptPart(module); !script.empty()) {
    return Denied(name,
                  absl::StrCat(whose, " '", module, "': '", script,
                               "' is a script that tools run (setup.py, manage.py, noxfile.py, "
                               "fabfile.py, conftest.py), whose top-level code would run on "
                               "import"),
                  "cnp-server never imports one: put the functions in a module of their own");
  }
  if (std::string vendor = VendoredPart(module); !vendor.empty()) {
    return Denied(name,
                  absl::StrCat(whose, " '", module, "' is below '", vendor,
                               "', where vendored libraries live: another project's code"),
                  "cnp-server calls only the operator's own functions");
  }
  if (naming == Naming::kWhereItIs) return absl::OkStatus();
  if (std::string part = PrivatePart(module); !part.empty()) {
    return Denied(name,
                  absl::StrCat(whose, " '", module, "': '", part, "' starts with '_', which "
                               "marks it private to its package (vendored libraries live in "
                               "such places)"),
                  "cnp-server calls only public functions: name the function, and each module "
                  "on the way to it, without a leading '_'");
  }
  return absl::OkStatus();
}

}  // namespace

ModuleRefusal NeverCallableReason(const std::string& module) {
  std::string top = module.substr(0, module.find('.'));
  for (const char* never : kInstallsOrRunsSoftware) {
    if (top == never) {
      return {absl::StrCat(
                  "module '", module, "' belongs to '", top, "', one of the packages that "
                  "install or run software (", absl::StrJoin(kInstallsOrRunsSoftware, ", "),
                  "), whose functions cnp-server never runs, even when --allow-module names "
                  "them"),
              ""};
    }
  }
  if (IsStandardLibrary(top)) {
    return {absl::StrCat("module '", module, "' is part of Python's standard library"),
            std::string(kNeverStandardLibrary)};
  }
  return {};
}

bool IsStandardLibrary(const std::string& module) {
  std::string top = module.substr(0, module.find('.'));
  PyRef name = PyRef::Steal(PyUnicode_FromStringAndSize(top.data(), top.size()));
  if (!name) {
    PyErr_Clear();
    return false;
  }
  for (const char* list : {"stdlib_module_names", "builtin_module_names"}) {
    PyObject* names = PySys_GetObject(list);  // borrowed
    if (names != nullptr && PySequence_Contains(names, name.get()) == 1) return true;
  }
  PyErr_Clear();
  return false;
}

// The module whose import raised: the first of `module`'s dotted prefixes ("m", "m.a", ...)
// missing from sys.modules, as Python takes a module whose top level raised out of it again.
// Its errors are counted under it rather than under the name asked for, so the metric holds a
// series per broken module on disk, not one per name a caller makes up ("m.f1", "m.f|2", "m.x.f"
// all fail on a broken "m").
std::string ModuleThatRaised(const std::string& module) {
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  for (size_t end = module.find('.');; end = module.find('.', end + 1)) {
    std::string prefix = module.substr(0, end);
    if (PyDict_GetItemString(modules, prefix.c_str()) == nullptr || end == std::string::npos) {
      return prefix;
    }
  }
}

absl::Status ImportFailed(const FunctionName& name) {
  UserException e = TakeException();
  if (IsCodeFileRefusal(e.value.get())) return Denied(name, e.message, "");
  // The module's own code raised (or an import in it failed): not the function's error. Say
  // so, and where; the service's log gets the traceback, under the name as asked for (with its
  // "|version"), as the function's other lines name it.
  const std::string asked =
      name.version ? absl::StrCat(name.path, "|", *name.version) : name.path;
  LogRaised(e, "import", asked, "");
  // The files it read go with the status, so that the registry answers this failure again
  // rather than import the same code again for each call (failed_imports.h).
  return WithFilesRead(MarkImportRaised(absl::NotFoundError(absl::StrCat(
                                             "importing ", name.module, ": ", e.Summary())),
                                         ModuleThatRaised(name.module)),
                       e.value.get());
}

ModulePolicy::ModulePolicy(std::vector<std::string> allowed_prefixes, CodeRoots roots)
    : allowed_prefixes_(std::move(allowed_prefixes)), roots_(std::move(roots)) {}

bool ModulePolicy::AllowedByPrefix(const std::string& module) const {
  if (allowed_prefixes_.empty()) return true;
  for (const std::string& prefix : allowed_prefixes_) {
    if (IsModuleOrSubmodule(module, prefix)) return true;
  }
  return false;
}

bool ModulePolicy::AllowedExplicitly(const std::string& module, bool on_the_way) const {
  for (const std::string& prefix : allowed_prefixes_) {
    if (IsModuleOrSubmodule(module, prefix)) return true;
    if (on_the_way && absl::StartsWith(prefix, absl::StrCat(module, "."))) return true;
  }
  return false;
}

ModulePolicy::Location ModulePolicy::LocateSpelling(const std::string& spelling) const {
  // The most specific root wins, so an operator directory inside the standard library's
  // tree still counts, and the standard library never does; an operator directory that is
  // also a library directory is the operator's (--python-path named it).
  std::string op = LongestRoot(spelling, roots_.operator_dirs);
  std::string library = LongestRoot(spelling, roots_.library_dirs);
  std::string stdlib = LongestRoot(spelling, roots_.stdlib_dirs);
  if (!op.empty() && op.size() >= library.size() && op.size() > stdlib.size()) {
    // What an installer put in the operator's directory is library code, under its name there
    // (an operator directory inside it is the operator's: --python-path named it); what one
    // put deeper down, under its name where it was installed, so that an --allow-module that
    // covers the operator's package does not cover a library installed inside it.
    const std::string installed = LongestRoot(spelling, roots_.installed_in_operator_dirs);
    if (installed.size() > op.size()) return {Root::kLibrary, ModuleNameBelow(spelling, op), op};
    if (std::optional<std::string> dir = install_records_.InstalledBelow(op, spelling)) {
      return {Root::kLibrary, ModuleNameBelow(spelling, *dir), *dir};
    }
    return {Root::kOperator, ModuleNameBelow(spelling, op), op};
  }
  if (library.size() > op.size() && library.size() > stdlib.size()) {
    return {Root::kLibrary, ModuleNameBelow(spelling, library), library};
  }
  if (!stdlib.empty()) return {Root::kStdlib, "", stdlib};
  // Under no root at all: reached through a symbolic link from an operator's directory (as
  // Bazel's runfiles are). What an installer put there is library code under its name there,
  // which makes the link library code too (a review linked myviews/pyyaml to a site-packages'
  // yaml); anything else is left to the other spelling.
  if (std::optional<std::string> dir = install_records_.InstalledBelow("/", spelling)) {
    return {Root::kLibrary, ModuleNameBelow(spelling, *dir), *dir};
  }
  return {};
}

ModulePolicy::Location ModulePolicy::Locate(const std::string& file) const {
  // Placed as imported and as resolved (symlinks followed), the stricter place decides: a
  // symlink in an operator directory to the standard library (py/views/sp.py ->
  // subprocess.py) is the standard library, one to a library directory is library code under
  // that library's name. Resolving alone would not do: Bazel's runfiles, say, are symlinks
  // from the operator's directory to files under no root at all.
  auto strictness = [](Root root) {
    switch (root) {
      case Root::kNone:
        return 0;
      case Root::kOperator:
        return 1;
      case Root::kLibrary:
        return 2;
      case Root::kStdlib:
        return 3;
    }
    return 3;
  };
  Location found;
  for (const std::string& spelling : Spellings(file)) {
    Location here = LocateSpelling(spelling);
    if (strictness(here.root) > strictness(found.root)) found = std::move(here);
  }
  return found;
}

bool ModulePolicy::IsUnderCodeRoots(const std::string& file) const {
  if (file.empty() || file[0] == '<') return false;
  Root root = Locate(file).root;
  return root == Root::kOperator || root == Root::kLibrary;
}

ModulePolicy::Problem ModulePolicy::FileProblem(const std::string& file, bool on_the_way,
                                                MissingFile missing) const {
  if (file.empty() || file[0] == '<') return {"has no source file", std::string(kPutItOnThePath)};
  Location location = Locate(file);
  switch (location.root) {
    case Root::kNone:
      return {absl::StrCat("is not under cnp-server's --python-path, PYTHONPATH or "
                           "--virtualenv (", file, ")"),
              std::string(kPutItOnThePath)};
    case Root::kStdlib:
      return {absl::StrCat("is part of Python's standard library (", file, ")"),
              std::string(kNeverStandardLibrary)};
    case Root::kOperator:
    case Root::kLibrary:
      break;
  }
  // Where the file really is, not the name it was imported by: the shim that makes distutils
  // setuptools' copy, or a package that re-exports pip's functions.
  if (ModuleRefusal never = NeverCallableReason(location.module); !never.why.empty()) {
    return {absl::StrCat("is in ", file, ": ", never.why), std::move(never.advice)};
  }
  if (std::optional<OwnershipProblem> writable = WritableByOthers(file)) {
    return {absl::StrCat("is in ", file, ", which ", writable->what,
                         ": another user could change the code cnp-server runs"),
            writable->fix};
  }
  // The directory it was imported from (a package's own, below the code directory checked at
  // start, for a module or its package's __init__.py): whoever may write there may put in a
  // module of their own, or a symlink to any file of root's, under a name an allowed module
  // imports.
  const std::string dir = std::filesystem::path(file).parent_path().string();
  if (std::optional<OwnershipProblem> writable = WritableByOthers(dir)) {
    return {absl::StrCat("is in ", file, ", whose directory ", writable->what,
                         ": another user could put code there that cnp-server runs"),
            writable->fix};
  }
  // The rest of the way to it: a directory above it, or a symbolic link on the way (the file's
  // own name included) that another user owns, who may point it at any file at any time, from
  // a sticky directory such as /tmp as well.
  // A file the import system found a moment ago and the walk does not: a link on the way was
  // removed meanwhile, which is refused too (it could be put back pointing elsewhere). A
  // function's own file may be gone for good, though: a module shipped as bytecode alone
  // (compileall -b, the source removed) names its source in co_filename; its code was read
  // through the code file guard.
  if (absl::Status way = CheckPathToFile(file, file, "change the code cnp-server runs");
      !way.ok() && !(absl::IsNotFound(way) && missing == MissingFile::kAllowed)) {
    return {absl::StrCat("is in ", way.message()), ""};
  }
  if (location.root == Root::kLibrary && !AllowedExplicitly(location.module, on_the_way)) {
    std::string top = location.module.substr(0, location.module.find('.'));
    return {absl::StrCat("is installed library code (", file, ", in a virtualenv's or an "
                         "installation's package directory, or installed beside the operator's "
                         "modules as a *.dist-info or *.egg-info there records), which runs "
                         "only when --allow-module names it"),
            absl::StrCat("start cnp-server with --allow-module=", top.empty() ? "MODULE" : top,
                         " to allow it, or put the operator's own modules on --python-path")};
  }
  return {};
}

ModulePolicy::Problem ModulePolicy::SpecProblem(PyObject* spec, bool on_the_way) const {
  if (spec == nullptr || spec == Py_None) {
    return {"has no import spec", std::string(kPutItOnThePath)};
  }
  PyRef has_location = PyRef::Steal(PyObject_GetAttrString(spec, "has_location"));
  PyErr_Clear();
  std::string origin = StrAttribute(spec, "origin");
  if (has_location && PyObject_IsTrue(has_location.get()) == 1) {
    return FileProblem(origin, on_the_way);
  }
  PyErr_Clear();
  // A namespace package: no file of its own, only directories its submodules come from.
  PyRef locations = PyRef::Steal(PyObject_GetAttrString(spec, "submodule_search_locations"));
  PyRef list = locations && locations.get() != Py_None
                   ? PyRef::Steal(PySequence_List(locations.get()))
                   : PyRef();
  PyErr_Clear();
  if (origin.empty() && list && PyList_GET_SIZE(list.get()) > 0) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list.get()); ++i) {
      PyRef bytes = PyRef::Steal(PyUnicode_EncodeFSDefault(PyList_GET_ITEM(list.get(), i)));
      if (!bytes) {
        PyErr_Clear();
        return {"has a search location that is not a path", std::string(kPutItOnThePath)};
      }
      if (Problem problem = FileProblem(PyBytes_AS_STRING(bytes.get()), on_the_way);
          !problem.why.empty()) {
        return problem;
      }
    }
    return {};
  }
  return {"is built into Python (it has no source file)", std::string(kPutItOnThePath)};
}

absl::Status ModulePolicy::NeverCallable(const FunctionName& name, const std::string& module,
                                         const std::string& whose) const {
  ModuleRefusal never = NeverCallableReason(module);
  if (never.why.empty()) return absl::OkStatus();
  // "module 'os' is ..." says whose module it is: the one requested or the function's own.
  if (whose != "module") never.why = absl::StrCat(whose, " ", never.why.substr(strlen("module ")));
  return Denied(name, never.why, never.advice);
}

absl::Status ModulePolicy::NotAllowedByPrefix(const FunctionName& name, const std::string& module,
                                              const std::string& whose) const {
  return Denied(name,
                absl::StrCat(whose, " '", module, "' is not covered by --allow-module (",
                             absl::StrJoin(allowed_prefixes_, ", "), ")"),
                // Conditional: a misspelt module, told "did you mean" after this, must not read
                // as advice to allow the misspelling.
                absl::StrCat("if '", module, "' is the module meant, start cnp-server with "
                             "--allow-module=", module, " to allow it"));
}

absl::Status ModulePolicy::CheckLocation(const FunctionName& name, const std::string& module) const {
  PyRef spec;
  PyObject* loaded = PyDict_GetItemString(PyImport_GetModuleDict(), module.c_str());  // borrowed
  if (loaded != nullptr) {
    if (!PyModule_Check(loaded)) {
      return Denied(name, absl::StrCat("'", module, "' in sys.modules is not a module"), "");
    }
    spec = PyRef::Borrow(PyDict_GetItemString(PyModule_GetDict(loaded), "__spec__"));
  } else {
    if (!find_spec_) {
      PyRef util = PyRef::Steal(PyImport_ImportModule("importlib.util"));
      if (util) find_spec_ = PyRef::Steal(PyObject_GetAttrString(util.get(), "find_spec"));
      if (!find_spec_) return absl::InternalError(TakeException().Summary());
    }
    // Finds where `import` would load the module from without running it. For a submodule
    // this imports the packages above it, each of which has passed this check already.
    spec = PyRef::Steal(PyObject_CallOneArg(find_spec_.get(),
                                            PyRef::Steal(PyUnicode_FromString(module.c_str())).get()));
    if (!spec) return ImportFailed(name);
    if (spec.get() == Py_None) {
      return absl::NotFoundError(
          absl::StrCat("ModuleNotFoundError: No module named '", module, "'"));
    }
  }
  Problem problem = SpecProblem(spec.get(), /*on_the_way=*/module != name.module);
  if (problem.why.empty()) return absl::OkStatus();
  return Denied(name, absl::StrCat("module '", module, "' ", problem.why), problem.advice);
}

absl::Status ModulePolicy::RefusalByName(const FunctionName& name) const {
  if (std::vector<std::string> dunders = DunderParts(name.path); !dunders.empty()) {
    return Denied(name,
                  absl::StrCat("'", dunders.front(), "' is a dunder name, which reaches Python's "
                               "machinery rather than a function"),
                  "cnp-server calls only functions defined in the operator's modules");
  }
  if (IsOurs(name.module)) {
    return Denied(name, "it belongs to couch_named_python, whose helpers are not functions "
                  "CouchDB may call", "");
  }
  // By name before anything else, --allow-module included: `distutils` never reaches
  // find_spec, where a virtualenv's shim would import setuptools to answer.
  if (absl::Status s = NeverCallable(name, name.module, "module"); !s.ok()) return s;
  if (absl::Status s = PrivateOrScript(name, name.module, "module"); !s.ok()) return s;
  if (std::string part = PrivatePart(name.attribute); !part.empty()) {
    return Denied(name,
                  absl::StrCat("'", part, "' starts with '_', which marks it private to its "
                               "module"),
                  "cnp-server calls only public functions: name one without a leading '_'");
  }
  return absl::OkStatus();
}

absl::Status ModulePolicy::CheckBeforeImport(const FunctionName& name) const {
  if (absl::Status s = RefusalByName(name); !s.ok()) return s;
  if (!AllowedByPrefix(name.module)) return NotAllowedByPrefix(name, name.module, "module");
  std::string package;
  for (absl::string_view part : absl::StrSplit(name.module, '.')) {
    absl::StrAppend(&package, package.empty() ? "" : ".", part);
    if (absl::Status s = CheckLocation(name, package); !s.ok()) return s;
  }
  return absl::OkStatus();
}

bool ModulePolicy::RefusesByName(const FunctionName& name) const {
  return !RefusalByName(name).ok();
}

absl::Status ModulePolicy::CheckFunction(const FunctionName& name, PyObject* attribute) const {
  if (!PyCallable_Check(attribute)) {
    return absl::NotFoundError(absl::StrCat("TypeError: ", name.path, " is of type ",
                                            Py_TYPE(attribute)->tp_name, ", not a function"));
  }
  if (!PyFunction_Check(attribute)) {
    return Denied(name,
                  absl::StrCat("it is of type ", Py_TYPE(attribute)->tp_name,
                               ", not a Python function"),
                  "cnp-server calls only functions defined with def or lambda in the operator's "
                  "modules, never classes, builtins or bound methods");
  }
  PyObject* own = PyFunction_GetModule(attribute);  // borrowed
  if (own == nullptr || !PyUnicode_CheckExact(own)) {
    return Denied(name, "its __module__ is not a module name", "");
  }
  std::string own_module = Utf8Text(own);
  if (IsOurs(own_module)) {
    return Denied(name, "it is couch_named_python's own helper, not a function CouchDB may call",
                  "");
  }
  if (absl::Status s = NeverCallable(name, own_module, "its own module"); !s.ok()) return s;
  if (!AllowedByPrefix(own_module)) return NotAllowedByPrefix(name, own_module, "its own module");
  if (absl::Status s = PrivateOrScript(name, own_module, "its own module", Naming::kWhereItIs);
      !s.ok()) {
    return s;
  }
  std::string file = StrAttribute(PyFunction_GetCode(attribute), "co_filename");
  if (IsFactoryProductOf(name, attribute, own_module)) return absl::OkStatus();
  // Where its code is, whatever __module__ it claims.
  if (const Location location = Locate(file); !location.module.empty()) {
    if (absl::Status s =
            PrivateOrScript(name, location.module, "its code's module", Naming::kWhereItIs);
        !s.ok()) {
      return s;
    }
  }
  if (Problem problem = FileProblem(file, /*on_the_way=*/false, MissingFile::kAllowed);
      !problem.why.empty()) {
    return Denied(name, absl::StrCat("its code ", problem.why), problem.advice);
  }
  return absl::OkStatus();
}

bool ModulePolicy::IsFactoryProductOf(const FunctionName& name, PyObject* function,
                                      const std::string& own_module) const {
  // Bound in the module the request named, which passed every check before it was imported.
  if (own_module != name.module) return false;
  if (!product_codes_) {
    PyRef factory = PyRef::Steal(PyImport_ImportModule("couch_named_python._factory"));
    if (factory) {
      product_codes_ = PyRef::Steal(PyObject_GetAttrString(factory.get(), "PRODUCT_CODES"));
      package_dir_ =
          std::filesystem::path(StrAttribute(factory.get(), "__file__")).parent_path().string();
    }
    if (!product_codes_ || !PySet_Check(product_codes_.get()) || package_dir_.empty()) {
      PyErr_Clear();
      product_codes_ = PyRef();
      return false;
    }
  }
  // Registered code that is not the package's own (the registration applied to a copy of
  // a standard-library function, say) is no factory's product.
  std::string file = StrAttribute(PyFunction_GetCode(function), "co_filename");
  bool in_package = false;
  for (const std::string& spelling : Spellings(file)) {
    for (const std::string& dir : Spellings(package_dir_)) {
      in_package = in_package || IsInside(spelling, dir);
    }
  }
  if (!in_package) return false;
  int found = PySet_Contains(product_codes_.get(), PyFunction_GetCode(function));
  if (found < 0) PyErr_Clear();
  return found == 1;
}

}  // namespace cnp::worker
