#include "service/worker/call_context.h"

#include "service/worker/py_text.h"

namespace cnp::worker {

CallContext& Context() {
  static CallContext context;
  return context;
}

std::string AttributedDocId(PyObject* doc) {
  if (doc == nullptr || !PyDict_Check(doc)) return "";
  PyObject* id = PyDict_GetItemString(doc, "_id");  // borrowed
  if (id == nullptr || PyUnicode_Check(id)) return Utf8TextPrefix(id, kAttributedIdBytes);
  if (id == Py_None) return "null";
  if (PyBool_Check(id)) return id == Py_True ? "true" : "false";
  if (!PyLong_Check(id) && !PyFloat_Check(id)) return "";
  // A number a function put there may be of any size: its text is cut like a string's.
  PyRef text = PyRef::Steal(PyObject_Str(id));
  if (!text) {
    PyErr_Clear();
    return "";
  }
  return Utf8TextPrefix(text.get(), kAttributedIdBytes);
}

bool RaiseAnswerTooLarge() {
  AnswerBudget& answer = Context().answer;
  answer.MarkExceeded();
  // Not a MemoryError: that would have the worker recycled, and nothing is wrong with it.
  PyErr_SetString(PyExc_RuntimeError, answer.Message().c_str());
  return false;
}

}  // namespace cnp::worker
