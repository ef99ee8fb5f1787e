#include "service/worker/py_text.h"

#include "service/worker/py_ref.h"

namespace cnp::worker {

std::string Utf8Text(PyObject* text) {
  if (text == nullptr || !PyUnicode_Check(text)) return "";
  Py_ssize_t length;
  if (const char* utf8 = PyUnicode_AsUTF8AndSize(text, &length)) return std::string(utf8, length);
  PyErr_Clear();
  PyRef escaped = PyRef::Steal(PyUnicode_AsEncodedString(text, "utf-8", "backslashreplace"));
  if (!escaped) {
    PyErr_Clear();
    return "";
  }
  return std::string(PyBytes_AS_STRING(escaped.get()), PyBytes_GET_SIZE(escaped.get()));
}

}  // namespace cnp::worker
