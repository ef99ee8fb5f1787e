#include "service/worker/failed_imports.h"

#include <set>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "service/worker/py_ref.h"

namespace cnp::worker {
namespace {

constexpr char kFilesReadPayload[] = "cnp.worker/import-failure-files";
constexpr char kImportRaisedPayload[] = "cnp.worker/import-raised";
constexpr size_t kMaxRememberedFailures = 4096;
constexpr absl::Duration kLookInterval = absl::Seconds(1);
// An exception chain, a traceback: user code makes them, so both are walked a bounded way.
constexpr int kMaxChainedExceptions = 16;
constexpr int kMaxFrames = 512;

// A str attribute or a code object's file name, as the file system spells it; only absolute
// paths ("<frozen importlib._bootstrap>" and "<string>" are not files).
void AddFile(PyObject* text, std::set<std::string>& files) {
  if (text == nullptr || !PyUnicode_Check(text)) return;
  PyRef bytes = PyRef::Steal(PyUnicode_EncodeFSDefault(text));
  if (!bytes) {
    PyErr_Clear();
    return;
  }
  std::string file(PyBytes_AS_STRING(bytes.get()), PyBytes_GET_SIZE(bytes.get()));
  if (!file.empty() && file[0] == '/') files.insert(std::move(file));
}

void AddAttributeFile(PyObject* object, const char* attribute, std::set<std::string>& files) {
  PyRef value = PyRef::Steal(PyObject_GetAttrString(object, attribute));
  if (!value) PyErr_Clear();
  AddFile(value.get(), files);
}

std::string Parent(const std::string& file) {
  size_t slash = file.rfind('/');
  return slash == 0 ? "/" : file.substr(0, slash);
}

}  // namespace

absl::Status WithFilesRead(absl::Status status, PyObject* exception) {
  std::set<std::string> files;
  std::vector<PyRef> chain;  // holds what PyException_GetCause/GetContext return
  std::vector<PyObject*> pending{exception};
  std::set<PyObject*> seen;
  while (!pending.empty() && static_cast<int>(seen.size()) < kMaxChainedExceptions) {
    PyObject* raised = pending.back();
    pending.pop_back();
    if (raised == nullptr || !PyExceptionInstance_Check(raised) || !seen.insert(raised).second) {
      continue;
    }
    // A syntax error is raised before its module has a frame; an ImportError of
    // `from module import name` names the module's file.
    if (PyErr_GivenExceptionMatches(raised, PyExc_SyntaxError)) {
      AddAttributeFile(raised, "filename", files);
    }
    if (PyErr_GivenExceptionMatches(raised, PyExc_ImportError)) {
      AddAttributeFile(raised, "path", files);
    }
    PyRef traceback = PyRef::Steal(PyException_GetTraceback(raised));
    int frames = 0;
    for (PyObject* tb = traceback.get(); tb != nullptr && PyTraceBack_Check(tb) &&
                                         frames < kMaxFrames;
         tb = reinterpret_cast<PyObject*>(reinterpret_cast<PyTracebackObject*>(tb)->tb_next),
                   ++frames) {
      PyFrameObject* frame = reinterpret_cast<PyTracebackObject*>(tb)->tb_frame;
      PyRef code = PyRef::Steal(reinterpret_cast<PyObject*>(PyFrame_GetCode(frame)));
      AddFile(reinterpret_cast<PyCodeObject*>(code.get())->co_filename, files);
    }
    for (PyObject* next : {PyException_GetCause(raised), PyException_GetContext(raised)}) {
      if (next == nullptr) continue;
      chain.push_back(PyRef::Steal(next));
      pending.push_back(next);
    }
  }
  // Even an empty list says "the code raised": the failure is remembered (and let go after
  // kRetryFailedImportAfter) on the package's own files alone.
  status.SetPayload(kFilesReadPayload, absl::Cord(absl::StrJoin(files, std::string(1, '\0'))));
  return status;
}

std::optional<std::vector<std::string>> FilesRead(const absl::Status& status) {
  auto payload = status.GetPayload(kFilesReadPayload);  // absl::optional<absl::Cord>
  if (!payload) return std::nullopt;
  return absl::StrSplit(std::string(*payload), '\0', absl::SkipEmpty());
}

absl::Status WithoutFilesRead(absl::Status status) {
  status.ErasePayload(kFilesReadPayload);
  return status;
}

absl::Status MarkImportRaised(absl::Status status, absl::string_view module) {
  status.SetPayload(kImportRaisedPayload, absl::Cord(module));
  return status;
}

std::optional<std::string> ImportRaisedIn(const absl::Status& status) {
  auto payload = status.GetPayload(kImportRaisedPayload);  // absl::optional<absl::Cord>
  if (!payload) return std::nullopt;
  return std::string(*payload);
}

void FailedImports::Remember(const std::string& key, absl::Status status,
                             const std::vector<std::string>& files, absl::Time now) {
  // Names differ in spelling ("|1", "| 1"), so the record is bounded as by_name_ is.
  if (failures_.size() >= kMaxRememberedFailures) failures_.clear();
  std::set<std::string> watched;
  for (const std::string& file : files) {
    watched.insert(file);
    watched.insert(Parent(file));  // a module created next to it, a file renamed over it
  }
  Failure failure{.status = std::move(status), .remembered = now, .looked_at = now};
  for (const std::string& file : watched) failure.stamps.push_back(SourceStamps::StampOf(file));
  failures_.insert_or_assign(key, std::move(failure));
}

std::optional<absl::Status> FailedImports::Recall(const std::string& key, bool rate_limited,
                                                  absl::Time now, bool* expired) {
  auto it = failures_.find(key);
  if (it == failures_.end()) return std::nullopt;
  Failure& failure = it->second;
  if (rate_limited && now - failure.looked_at < kLookInterval && now >= failure.looked_at) {
    return failure.status;
  }
  bool holds = now >= failure.remembered && now - failure.remembered < kRetryFailedImportAfter;
  for (size_t i = 0; holds && i < failure.stamps.size(); ++i) {
    holds = SourceStamps::StampOf(failure.stamps[i].file) == failure.stamps[i];
  }
  if (!holds) {
    failures_.erase(it);
    *expired = true;
    return std::nullopt;
  }
  failure.looked_at = now;
  return failure.status;
}

}  // namespace cnp::worker
