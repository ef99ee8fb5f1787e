#include "service/worker/raised_log.h"

#include <unistd.h>

#include <cstdint>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "common/utf8_text.h"
#include "service/worker/call_context.h"
#include "service/worker/py_ref.h"
#include "service/worker/py_text.h"

namespace cnp::worker {
namespace {

// The kind of the notice that tracebacks were left out (service/common/function_log.h
// kTracebacksLeftOutKind, which the server and a direct session's worker write as a WARN line).
constexpr char kLeftOutKind[] = "tracebacks_left_out";

// Whether one more traceback may be formatted this second. Those that may not are counted, and
// the next second's first one is preceded by a notice of how many (in the same reply, or the
// same session's lines), as the service's log announces the lines it leaves out. Called with
// the GIL held.
bool Admit() {
  static int64_t second = 0;
  static int admitted = 0;
  static int64_t left_out = 0;
  timespec now;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &now);  // the vDSO, no system call
  if (now.tv_sec != second) {
    second = now.tv_sec;
    admitted = 0;
    if (left_out > 0) {
      AttributedLog notice;
      notice.message = absl::StrCat(
          left_out, " tracebacks of functions were left out of this log by worker pid ",
          ::getpid(), " in the last second(s) (each worker formats at most ",
          kRaisedTracebacksPerSecond, " a second); their callers and CouchDB got the errors, "
          "and cnp_function_errors_total counts them");
      notice.kind = kLeftOutKind;
      Context().attributed_logs.push_back(std::move(notice));
      left_out = 0;
    }
  }
  if (admitted < kRaisedTracebacksPerSecond) {
    ++admitted;
    return true;
  }
  ++left_out;
  return false;
}

}  // namespace

std::string FormatTraceback(const UserException& exception) {
  // A MemoryError is formatted by no Python code: that would need the memory that ran out.
  if (!exception.value || exception.type == "MemoryError") return exception.Summary();
  static PyObject* format = nullptr;  // couch_named_python._traceback.format_user_traceback
  if (format == nullptr) {
    PyRef module = PyRef::Steal(PyImport_ImportModule("couch_named_python._traceback"));
    if (module) format = PyObject_GetAttrString(module.get(), "format_user_traceback");
  }
  PyRef text = format != nullptr ? PyRef::Steal(PyObject_CallOneArg(format, exception.value.get()))
                                 : PyRef();
  if (!text || !PyUnicode_Check(text.get())) {
    PyErr_Clear();
    return exception.Summary();
  }
  std::string formatted = Utf8Text(text.get());
  while (!formatted.empty() && formatted.back() == '\n') formatted.pop_back();
  return formatted;
}

namespace {

void Record(const UserException& exception, std::string_view kind, std::string_view function,
            PyObject* doc, std::string_view doc_id) {
  // Keeps an exception the caller may still have pending.
  PyObject *pending_type, *pending_value, *pending_traceback;
  PyErr_Fetch(&pending_type, &pending_value, &pending_traceback);
  AttributedLog event;
  event.message = (kind == "import" ? "importing the function's module raised "
                                    : "function raised ") + exception.Summary();
  event.function = std::string(function);
  event.kind = std::string(kind);
  event.doc_id = doc != nullptr && PyDict_Check(doc)
                     ? AttributedDocId(doc)
                     : std::string(Utf8Prefix(absl::string_view(doc_id.data(), doc_id.size()), kAttributedIdBytes));
  event.error = exception.type;
  event.traceback = FormatTraceback(exception);
  Context().attributed_logs.push_back(std::move(event));
  PyErr_Restore(pending_type, pending_value, pending_traceback);
}

}  // namespace

void LogRaised(const UserException& exception, std::string_view kind, std::string_view function,
               std::string_view doc_id) {
  if (Admit()) Record(exception, kind, function, nullptr, doc_id);
}

void LogRaised(const UserException& exception) {
  if (!Admit()) return;
  const LogOrigin& origin = Context().origin;
  Record(exception, origin.kind, origin.function, origin.doc, "");
}

}  // namespace cnp::worker
