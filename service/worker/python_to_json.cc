#include "service/worker/python_to_json.h"

#include <cmath>
#include <cstring>
#include <new>
#include <string>

#include "service/worker/call_context.h"
#include "service/worker/json_to_python.h"
#include "service/worker/py_ref.h"

namespace cnp::worker {
namespace {

bool RaiseNotSerializable(PyObject* value) {
  PyErr_Format(PyExc_TypeError, "Object of type %s is not JSON serializable",
               Py_TYPE(value)->tp_name);
  return false;
}

// repr() of a float, which is also what json.dumps writes.
PyRef FloatRepr(double value) {
  char* text = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, nullptr);
  if (text == nullptr) return PyRef();
  PyRef result = PyRef::Steal(PyUnicode_FromString(text));
  PyMem_Free(text);
  return result;
}

void AppendUtf8(std::string& out, Py_UCS4 c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

void AppendEscape(std::string& out, Py_UCS4 c, const char* digits) {
  out += "\\u";
  for (int shift = 12; shift >= 0; shift -= 4) out += digits[(c >> shift) & 0xF];
}

// `text` as a quoted JSON string with each surrogate code point written as a \uXXXX escape
// and everything else as rapidjson's Writer writes it (the same escapes for '"', '\\' and
// control characters), for a str that UTF-8 cannot encode.
std::string QuotedWithSurrogatesEscaped(PyObject* text) {
  const int kind = PyUnicode_KIND(text);
  const void* data = PyUnicode_DATA(text);
  const Py_ssize_t length = PyUnicode_GET_LENGTH(text);
  std::string out;
  out.reserve(static_cast<size_t>(length) + 8);
  out += '"';
  for (Py_ssize_t i = 0; i < length; ++i) {
    const Py_UCS4 c = PyUnicode_READ(kind, data, i);
    if (c >= 0xD800 && c <= 0xDFFF) {
      AppendEscape(out, c, "0123456789abcdef");  // as JavaScript's JSON.stringify writes it
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      switch (c) {
        case '\b': out += "\\b"; break;
        case '\t': out += "\\t"; break;
        case '\n': out += "\\n"; break;
        case '\f': out += "\\f"; break;
        case '\r': out += "\\r"; break;
        default: AppendEscape(out, c, "0123456789ABCDEF");  // rapidjson's digits
      }
    } else {
      AppendUtf8(out, c);
    }
  }
  out += '"';
  return out;
}

}  // namespace

// A str holding a lone surrogate ("\ud800" in Python source, or bytes decoded with
// surrogateescape) has no UTF-8 form. couchjs writes such a JavaScript string with the surrogate
// escaped and CouchDB reads it as U+FFFD, so the value (a map row, say) is kept: write it the
// same way. Reached only once the fast UTF-8 path has failed, so valid strings never pay for it.
bool PythonJsonWriter::WriteUnencodableString(PyObject* text) {
  if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return false;
  PyErr_Clear();
  const std::string quoted = QuotedWithSurrogatesEscaped(text);
  return writer_.RawValue(quoted.data(), quoted.size(), rapidjson::kStringType);
}

bool PythonJsonWriter::Rollback(size_t mark) {
  out_.Pop(out_.GetSize() - mark);
  return false;
}

bool PythonJsonWriter::TooLarge() { return RaiseAnswerTooLarge(); }

bool PythonJsonWriter::Write(PyObject* value) {
  size_t mark = out_.GetSize();
  limit_ = Context().answer.room();
  try {
    writer_.Reset(out_);  // each call writes one complete root value
    if (!WriteValue(value, 0)) return Rollback(mark);
  } catch (const std::bad_alloc&) {
    return OutOfMemory(mark);
  }
  // The last scalar is checked here (each value is checked before it is written).
  if (out_.GetSize() > limit_) [[unlikely]] {
    TooLarge();
    return Rollback(mark);
  }
  return true;
}

bool PythonJsonWriter::WritePair(PyObject* first, PyObject* second) {
  size_t mark = out_.GetSize();
  limit_ = Context().answer.room();
  try {
    writer_.Reset(out_);
    writer_.StartArray();
    if (!WriteValue(first, 1) || !WriteValue(second, 1)) return Rollback(mark);
    writer_.EndArray();
  } catch (const std::bad_alloc&) {
    return OutOfMemory(mark);
  }
  if (out_.GetSize() > limit_) [[unlikely]] {
    TooLarge();
    return Rollback(mark);
  }
  return true;
}

bool PythonJsonWriter::OutOfMemory(size_t mark) {
  // The buffer grows by realloc, which left it as it was: the rollback only shrinks it.
  PyErr_Clear();
  PyErr_NoMemory();
  return Rollback(mark);
}

bool PythonJsonWriter::WriteFloat(double value) {
  if (!std::isfinite(value)) return writer_.Null();
  char* text = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, nullptr);
  if (text == nullptr) return false;
  writer_.RawValue(text, std::strlen(text), rapidjson::kNumberType);
  PyMem_Free(text);
  return true;
}

bool PythonJsonWriter::WriteKey(PyObject* key) {
  Py_ssize_t length;
  if (PyUnicode_Check(key)) {
    const char* text = PyUnicode_AsUTF8AndSize(key, &length);
    if (text == nullptr) [[unlikely]] return WriteUnencodableString(key);
    return writer_.Key(text, static_cast<rapidjson::SizeType>(length));
  }
  // Other keys become strings the way json.dumps makes them.
  PyRef converted;
  if (key == Py_True) return writer_.Key("true", 4);
  if (key == Py_False) return writer_.Key("false", 5);
  if (key == Py_None) return writer_.Key("null", 4);
  if (PyLong_Check(key)) {
    converted = PyRef::Steal(PyLong_Type.tp_repr(key));  // an IntEnum key is its number
  } else if (PyFloat_Check(key)) {
    double d = PyFloat_AS_DOUBLE(key);
    if (std::isnan(d)) return writer_.Key("NaN", 3);
    if (std::isinf(d)) return d > 0 ? writer_.Key("Infinity", 8) : writer_.Key("-Infinity", 9);
    converted = FloatRepr(d);
  } else {
    PyErr_Format(PyExc_TypeError, "keys must be str, int, float, bool or None, not %s",
                 Py_TYPE(key)->tp_name);
    return false;
  }
  if (!converted) return false;
  const char* text = PyUnicode_AsUTF8AndSize(converted.get(), &length);
  return text != nullptr && writer_.Key(text, static_cast<rapidjson::SizeType>(length));
}

bool PythonJsonWriter::WriteValue(PyObject* value, int depth) {
  // Before each value, so that a container holding the same big object many times stops as
  // soon as the output passes the room, not once it is all written.
  if (out_.GetSize() > limit_) [[unlikely]] return TooLarge();
  if (PyUnicode_Check(value)) {
    Py_ssize_t length;
    const char* text = PyUnicode_AsUTF8AndSize(value, &length);  // fails on lone surrogates
    if (text == nullptr) [[unlikely]] return WriteUnencodableString(value);
    if (static_cast<size_t>(length) > limit_ - out_.GetSize()) [[unlikely]] return TooLarge();
    return writer_.String(text, static_cast<rapidjson::SizeType>(length));
  }
  if (value == Py_None) return writer_.Null();
  if (value == Py_True) return writer_.Bool(true);
  if (value == Py_False) return writer_.Bool(false);
  if (PyLong_Check(value)) {
    int overflow = 0;
    long long small = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow == 0) {
      if (small == -1 && PyErr_Occurred()) return false;
      return writer_.Int64(small);
    }
    PyRef digits = PyRef::Steal(PyLong_Type.tp_str(value));  // int's own str(), not a subclass's
    Py_ssize_t length;
    const char* text = digits ? PyUnicode_AsUTF8AndSize(digits.get(), &length) : nullptr;
    if (text == nullptr) return false;
    return writer_.RawValue(text, length, rapidjson::kNumberType);
  }
  if (PyFloat_Check(value)) return WriteFloat(PyFloat_AS_DOUBLE(value));

  if (depth >= kMaxJsonDepth) {
    PyErr_Format(PyExc_ValueError,
                 "value nested deeper than %d levels (or it contains itself)", kMaxJsonDepth);
    return false;
  }
  if (PyList_Check(value) || PyTuple_Check(value)) {
    writer_.StartArray();
    // Writing runs no Python code, so the sequence cannot change under the loop: it calls no
    // method of a subclass (int's and float's own str, repr), and what it allocates are strs,
    // which CPython 3.11's collector does not count, so no collection (and no finalizer) runs.
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(value); ++i) {
      if (!WriteValue(PySequence_Fast_GET_ITEM(value, i), depth + 1)) return false;
    }
    return writer_.EndArray();
  }
  if (PyDict_Check(value)) {
    writer_.StartObject();
    Py_ssize_t position = 0;
    PyObject *key, *item;
    while (PyDict_Next(value, &position, &key, &item)) {
      if (!WriteKey(key) || !WriteValue(item, depth + 1)) return false;
    }
    return writer_.EndObject();
  }
  return RaiseNotSerializable(value);
}

}  // namespace cnp::worker
