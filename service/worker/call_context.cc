#include "service/worker/call_context.h"

namespace cnp::worker {

CallContext& Context() {
  static CallContext context;
  return context;
}

bool RaiseAnswerTooLarge() {
  AnswerBudget& answer = Context().answer;
  answer.MarkExceeded();
  // Not a MemoryError: that would have the worker recycled, and nothing is wrong with it.
  PyErr_SetString(PyExc_RuntimeError, answer.Message().c_str());
  return false;
}

}  // namespace cnp::worker
