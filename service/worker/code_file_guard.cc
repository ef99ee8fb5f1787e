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
#include "common/code_ownership.h"
#include "service/worker/py_ref.h"

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

// Why the code in `file` (opened, and `st` what fstat says of it) may not run, or empty.
std::string WhyNot(const std::string& file, const struct stat& st) {
  const std::filesystem::path cache_dir = std::filesystem::path(file).parent_path();
  // A cache may go: Python compiles the source instead (the worker writes no caches).
  const bool is_cache = cache_dir.filename() == "__pycache__";
  if (std::optional<OwnershipProblem> problem = OthersCanChange(file, st)) {
    return Refusal(file, is_cache ? "this bytecode cache, which Python runs instead of its "
                                    "source,"
                                  : "it",
                   *problem, is_cache ? "it" : "");
  }
  if (!is_cache) return "";
  // The file could not be replaced under us, but whoever may write to its directory could
  // have put it there, or will put the next one.
  struct stat dir_st {};
  if (::stat(cache_dir.c_str(), &dir_st) != 0) {
    return absl::StrCat("cnp-worker does not load ", file, ": cannot check its directory ",
                        cache_dir.string(), ": ", std::strerror(errno));
  }
  if (std::optional<OwnershipProblem> problem = OthersCanChange(cache_dir.string(), dir_st)) {
    return Refusal(file, absl::StrCat("it is a bytecode cache, which Python runs instead of its "
                                      "source, and its directory ", cache_dir.string()),
                   *problem, cache_dir.string());
  }
  return "";
}

// io.open_code(path): what importlib (sources, caches), site (.pth files) and zipimport read
// code with. Opens as io.open(path, "rb") would, then checks what it opened.
PyObject* OpenCode(PyObject* path, void*) {
  PyRef encoded = PyRef::Steal(PyUnicode_EncodeFSDefault(path));
  if (!encoded) return nullptr;
  const std::string file(PyBytes_AS_STRING(encoded.get()), PyBytes_GET_SIZE(encoded.get()));
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    ::close(fd);
    return nullptr;
  }
  if (std::string why = WhyNot(file, st); !why.empty()) {
    ::close(fd);
    if (PyObject* type = RefusalType(); type != nullptr) PyErr_SetString(type, why.c_str());
    return nullptr;
  }
  // The file object owns the descriptor from here (closefd).
  return PyFile_FromFd(fd, file.c_str(), "rb", -1, nullptr, nullptr, nullptr, /*closefd=*/1);
}

}  // namespace

absl::Status InstallCodeFileGuard() {
  if (PyFile_SetOpenCodeHook(&OpenCode, nullptr) != 0) {
    return absl::FailedPreconditionError(
        "cannot guard the files Python loads code from: another open_code hook is installed");
  }
  return absl::OkStatus();
}

bool IsCodeFileRefusal(PyObject* exception) {
  if (exception == nullptr || refusal_type == nullptr) return false;
  int is = PyObject_IsInstance(exception, refusal_type);
  if (is < 0) PyErr_Clear();
  return is == 1;
}

}  // namespace cnp::worker
