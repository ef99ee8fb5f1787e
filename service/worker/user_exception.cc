#include "service/worker/user_exception.h"

#include "absl/strings/string_view.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "service/worker/call_context.h"
#include "service/worker/py_text.h"

namespace cnp::worker {
namespace {

std::string TextOr(PyObject* text, const char* placeholder) {
  if (text == nullptr) {
    PyErr_Clear();
    return placeholder;
  }
  return Utf8Text(text);
}

std::vector<std::string>& OperatorDirectories() {
  static std::vector<std::string> dirs;
  return dirs;
}

// `file` relative to the operator directory it lies under, or empty.
absl::string_view BelowOperatorDirectory(absl::string_view file) {
  for (const std::string& dir : OperatorDirectories()) {
    if (dir.empty() || file.size() <= dir.size() || !absl::StartsWith(file, dir)) continue;
    if (dir.back() == '/') return file.substr(dir.size());
    if (file[dir.size()] == '/') return file.substr(dir.size() + 1);
  }
  return {};
}

absl::string_view Utf8View(PyObject* text) {
  Py_ssize_t size = 0;
  const char* data = text != nullptr && PyUnicode_Check(text) ? PyUnicode_AsUTF8AndSize(text, &size)
                                                              : nullptr;
  if (data == nullptr) {
    PyErr_Clear();
    return {};
  }
  return {data, static_cast<size_t>(size)};
}

}  // namespace

void SetOperatorDirectories(std::vector<std::string> dirs) { OperatorDirectories() = std::move(dirs); }

std::string WhereRaised(PyObject* traceback) {
  PyTracebackObject* innermost = nullptr;
  absl::string_view file;
  for (PyObject* tb = traceback; tb != nullptr && PyTraceBack_Check(tb);) {
    PyTracebackObject* entry = reinterpret_cast<PyTracebackObject*>(tb);
    PyRef code = PyRef::Steal(reinterpret_cast<PyObject*>(PyFrame_GetCode(entry->tb_frame)));
    absl::string_view relative =
        BelowOperatorDirectory(Utf8View(reinterpret_cast<PyCodeObject*>(code.get())->co_filename));
    if (!relative.empty()) {
      innermost = entry;
      file = relative;  // the code object lives as long as the frame the traceback holds
    }
    tb = reinterpret_cast<PyObject*>(entry->tb_next);
  }
  if (innermost == nullptr) return "";
  PyRef code = PyRef::Steal(reinterpret_cast<PyObject*>(PyFrame_GetCode(innermost->tb_frame)));
  PyRef line = PyRef::Steal(PyObject_GetAttrString(reinterpret_cast<PyObject*>(innermost), "tb_lineno"));
  long number = line ? PyLong_AsLong(line.get()) : -1;
  if (number < 0) PyErr_Clear();
  absl::string_view name = Utf8View(reinterpret_cast<PyCodeObject*>(code.get())->co_name);
  return number < 0 ? absl::StrCat(file, " in ", name)
                    : absl::StrCat(file, ":", number, " in ", name);
}

UserException TakeException() {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  UserException result;
  result.value = PyRef::Steal(value);
  PyRef type_ref = PyRef::Steal(type);
  PyRef traceback_ref = PyRef::Steal(traceback);
  // The traceback travels with the exception object, so that it can be logged later.
  if (result.value && traceback_ref) PyException_SetTraceback(result.value.get(), traceback_ref.get());
  if (type_ref && PyType_Check(type_ref.get())) {
    PyTypeObject* cls = reinterpret_cast<PyTypeObject*>(type_ref.get());
    if (PyType_IsSubtype(cls, reinterpret_cast<PyTypeObject*>(PyExc_MemoryError))) {
      Context().memory_error = true;
    }
    result.type = TextOr(PyRef::Steal(PyType_GetName(cls)).get(), "Exception");
  } else {
    result.type = "Exception";
  }
  if (result.value) {
    result.message = TextOr(PyRef::Steal(PyObject_Str(result.value.get())).get(),
                                       "<exception str() failed>");
  }
  result.where = WhereRaised(traceback_ref.get());
  return result;
}

}  // namespace cnp::worker
