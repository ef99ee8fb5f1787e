#include "service/worker/call_context.h"

#include "service/worker/py_text.h"

namespace cnp::worker {

CallContext& Context() {
  static CallContext context;
  return context;
}

std::string AttributedDocId(PyObject* doc) {
  if (doc == nullptr || !PyDict_Check(doc)) return "";
  return Utf8TextPrefix(PyDict_GetItemString(doc, "_id"), kAttributedIdBytes);  // borrowed
}

bool RaiseAnswerTooLarge() {
  AnswerBudget& answer = Context().answer;
  answer.MarkExceeded();
  // Not a MemoryError: that would have the worker recycled, and nothing is wrong with it.
  PyErr_SetString(PyExc_RuntimeError, answer.Message().c_str());
  return false;
}

}  // namespace cnp::worker
