#include "service/worker/code_file_guard.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/code_directory.h"
#include "common/code_ownership.h"
#include "service/worker/py_ref.h"
#include "service/worker/user_exception.h"

namespace cnp::worker {
namespace {

// The refusal's class, made when the first refusal is raised (the interpreter runs by then).
PyObject* refusal_type = nullptr;

PyObject* RefusalType() {
  if (refusal_type == nullptr) {
    refusal_type = PyErr_NewExceptionWithDoc(
        "cnp_worker.UntrustedCodeError",
        "cnp-worker refused a file of Python code another user could change.",
        PyExc_ImportError, nullptr);
  }
  return refusal_type;
}

std::string Refusal(const std::string& file, const std::string& of_what,
                    const OwnershipProblem& problem, const std::string& removable) {
  return absl::StrCat("cnp-worker does not load ", file, ": ", of_what, " ", problem.what,
                      ": another user could change the code cnp-server runs; ", problem.fix,
                      removable.empty() ? "" : ", or remove ", removable);
}

// What a file of code is, for the checks it needs beyond its own.
enum class CodeFileKind {
  kModule,     // a source, a bare .pyc, a .pth file, a zip archive: read whole from the fd
  kCache,      // __pycache__/NAME.cpython-311.pyc: Python takes it instead of the source
  kExtension,  // NAME.so: the check opens it, but dlopen opens it again by its name
};

CodeFileKind KindOf(const std::filesystem::path& file) {
  if (file.parent_path().filename() == "__pycache__") return CodeFileKind::kCache;
  // Every suffix of importlib.machinery.EXTENSION_SUFFIXES on Linux ends so.
  if (file.extension() == ".so") return CodeFileKind::kExtension;
  return CodeFileKind::kModule;
}

// Why the code in `file` (opened, and `st` what fstat says of it) may not run, or empty.
std::string WhyNot(const std::string& file, const struct stat& st) {
  const CodeFileKind kind = KindOf(file);
  const std::filesystem::path dir = std::filesystem::path(file).parent_path();
  // A cache may go: Python compiles the source instead (the worker writes no caches).
  const bool is_cache = kind == CodeFileKind::kCache;
  if (std::optional<OwnershipProblem> problem = OthersCanChange(file, st)) {
    return Refusal(file, is_cache ? "this bytecode cache, which Python runs instead of its "
                                    "source,"
                                  : "it",
                   *problem, is_cache ? "it" : "");
  }
  if (kind == CodeFileKind::kModule) return "";
  // The file could not be replaced under us, but whoever may write to its directory could
  // have put a cache there, or will put the next one; and could swap an extension for another
  // file between this check and dlopen.
  struct stat dir_st {};
  if (::stat(dir.c_str(), &dir_st) != 0) {
    return absl::StrCat("cnp-worker does not load ", file, ": cannot check its directory ",
                        dir.string(), ": ", std::strerror(errno));
  }
  if (std::optional<OwnershipProblem> problem = OthersCanChange(dir.string(), dir_st)) {
    return is_cache ? Refusal(file,
                              absl::StrCat("it is a bytecode cache, which Python runs instead of "
                                           "its source, and its directory ",
                                           dir.string()),
                              *problem, dir.string())
                    : Refusal(file,
                              absl::StrCat("it is an extension module, which Python loads by "
                                           "its name, and its directory ",
                                           dir.string()),
                              *problem, "");
  }
  return "";
}

// io.open_code(path): what importlib (sources, caches), site (.pth files) and zipimport read
// code with. Opens as io.open(path, "rb") would, then checks what it opened.
PyObject* OpenCode(PyObject* path, void*) {
  PyRef encoded = PyRef::Steal(PyUnicode_EncodeFSDefault(path));
  if (!encoded) return nullptr;
  const std::string file(PyBytes_AS_STRING(encoded.get()), PyBytes_GET_SIZE(encoded.get()));
  std::string why;
  // Twice at most: an editor's save (a new file renamed into place) may land between the open
  // and the walk, which then reaches another file than the one opened.
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
      ::close(fd);
      return nullptr;
    }
    why = WhyNot(file, st);
    // The way to it: a symbolic link another user owns (a module's own name linked into
    // /tmp, or a package's helper an allowed module imports) lets them pick the file.
    absl::Status way = absl::OkStatus();
    if (why.empty()) {
      way = CheckLinksToOpenedFile(file, st, absl::StrCat("cnp-worker does not load ", file),
                                   "change the code cnp-server runs");
      if (!way.ok()) why = std::string(way.message());
    }
    if (why.empty()) {
      // The file object owns the descriptor from here (closefd).
      return PyFile_FromFd(fd, file.c_str(), "rb", -1, nullptr, nullptr, nullptr,
                           /*closefd=*/1);
    }
    ::close(fd);
    if (!absl::IsAborted(way)) break;
  }
  if (PyObject* type = RefusalType(); type != nullptr) PyErr_SetString(type, why.c_str());
  return nullptr;
}

}  // namespace

absl::Status InstallCodeFileGuard() {
  if (PyFile_SetOpenCodeHook(&OpenCode, nullptr) != 0) {
    return absl::FailedPreconditionError(
        "cannot guard the files Python loads code from: another open_code hook is installed");
  }
  return absl::OkStatus();
}

absl::Status GuardLoadersWithoutOpenCode() {
  // importlib's own classes, the ones sys.path_hooks' finders make loaders of. A bare .pyc is
  // read through io.open_code as a source or cache is (FileLoader.get_data uses io.FileIO for
  // it). An extension is opened through it before _imp.create_dynamic dlopens it, so the hook
  // checks the file and its directory (KindOf).
  constexpr const char* kRouteThroughOpenCode = R"PY(
import _io
from _frozen_importlib_external import ExtensionFileLoader, SourcelessFileLoader

def get_data(self, path):
    with _io.open_code(str(path)) as file:
        return file.read()

def create_module(self, spec, load=ExtensionFileLoader.create_module):
    _io.open_code(spec.origin).close()
    return load(self, spec)

SourcelessFileLoader.get_data = get_data
ExtensionFileLoader.create_module = create_module
)PY";
  PyRef globals = PyRef::Steal(PyDict_New());
  if (globals && PyDict_SetItemString(globals.get(), "__builtins__", PyEval_GetBuiltins()) == 0) {
    PyRef done = PyRef::Steal(
        PyRun_String(kRouteThroughOpenCode, Py_file_input, globals.get(), globals.get()));
    if (done) return absl::OkStatus();
  }
  UserException e = TakeException();
  return absl::InternalError(
      absl::StrCat("cannot guard the bytecode and extension modules Python loads without "
                   "io.open_code: ",
                   e.Summary()));
}

bool IsCodeFileRefusal(PyObject* exception) {
  if (exception == nullptr || refusal_type == nullptr) return false;
  int is = PyObject_IsInstance(exception, refusal_type);
  if (is < 0) PyErr_Clear();
  return is == 1;
}

}  // namespace cnp::worker
