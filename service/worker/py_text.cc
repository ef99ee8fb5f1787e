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
  std::string escaped;  // only for a str UTF-8 cannot hold (lone surrogates), which is copied
  absl::string_view whole;
  if (utf8 != nullptr) {
    whole = absl::string_view(utf8, static_cast<size_t>(length));
  } else {
    PyErr_Clear();
    escaped = Utf8Text(text);
    whole = escaped;
  }
  if (whole.size() <= max_bytes) return std::string(whole);
  return absl::StrCat(Utf8Prefix(whole, max_bytes), "...");
}

}  // namespace cnp::worker
