#include "service/worker/raised_log.h"

#include <cstdint>
#include <ctime>

#include "service/worker/call_context.h"
#include "service/worker/py_ref.h"
#include "service/worker/py_text.h"

namespace cnp::worker {
namespace {

// Whether one more traceback may be formatted this second. Called with the GIL held.
bool Admit() {
  static int64_t second = 0;
  static int admitted = 0;
  timespec now;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &now);  // the vDSO, no system call
  if (now.tv_sec != second) {
    second = now.tv_sec;
    admitted = 0;
  }
  return admitted++ < kRaisedTracebacksPerSecond;
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
                     ? Utf8Text(PyDict_GetItemString(doc, "_id"))  // borrowed
                     : std::string(doc_id);
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
