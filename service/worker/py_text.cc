#include "service/worker/py_text.h"

#include "absl/strings/str_cat.h"
#include "common/utf8_text.h"
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

std::string Utf8TextPrefix(PyObject* text, size_t max_bytes) {
  if (text == nullptr || !PyUnicode_Check(text)) return "";
  Py_ssize_t length;
  const char* utf8 = PyUnicode_AsUTF8AndSize(text, &length);  // kept by the str: no copy
  if (utf8 == nullptr) {
    PyErr_Clear();
    std::string escaped = Utf8Text(text);
    if (escaped.size() <= max_bytes) return escaped;
    return absl::StrCat(Utf8Prefix(escaped, max_bytes), "...");
  }
  const absl::string_view whole(utf8, static_cast<size_t>(length));
  if (whole.size() <= max_bytes) return std::string(whole);
  return absl::StrCat(Utf8Prefix(whole, max_bytes), "...");
}

}  // namespace cnp::worker
