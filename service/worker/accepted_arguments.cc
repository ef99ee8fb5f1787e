#include "service/worker/accepted_arguments.h"

#include "service/worker/forked_child.h"

namespace cnp::worker {

// The function's own code object, not inspect.signature(): signature() follows a
// functools.wraps decorator's __wrapped__ to the decorated function, but the wrapper is what
// is called. A wrapper written (*args, **kwargs) must go on getting every argument (it may add
// to them or take some before it calls on), and one that declares parameters of its own is
// read from those. So __wrapped__ and __signature__ are not looked at. @version returns the
// function itself, so a versioned function is read as written.
int PositionalParameters(PyObject* function) {
  if (!PyFunction_Check(function)) return -1;
  auto* code = reinterpret_cast<PyCodeObject*>(PyFunction_GetCode(function));
  if (code->co_flags & CO_VARARGS) return -1;
  return code->co_argcount;  // positional-only and positional-or-keyword, not keyword-only
}

PyObject* CallWithAcceptedArguments(PyObject* function, PyObject* const* args, Py_ssize_t count) {
  const int accepted = PositionalParameters(function);
  const Py_ssize_t given = accepted > 0 && accepted < count ? accepted : count;
  PyObject* result = PyObject_Vectorcall(function, args, static_cast<size_t>(given), nullptr);
  LeaveIfForkedChild();
  return result;
}

}  // namespace cnp::worker
