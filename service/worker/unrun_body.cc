#include "service/worker/unrun_body.h"

#include <string>

#include "service/worker/forked_child.h"

namespace cnp::worker {

bool IsUnrunBody(PyObject* value) {
  return PyGen_Check(value) || PyCoro_CheckExact(value) || PyAsyncGen_CheckExact(value);
}

Body BodyOf(PyObject* callable) {
  if (!PyFunction_Check(callable)) return Body::kPlain;
  const int flags = reinterpret_cast<PyCodeObject*>(PyFunction_GET_CODE(callable))->co_flags;
  if (flags & CO_ASYNC_GENERATOR) return Body::kAsyncGenerator;
  if (flags & CO_COROUTINE) return Body::kCoroutine;
  if (flags & CO_GENERATOR) return Body::kGenerator;
  return Body::kPlain;
}

bool RefuseUnrunBody(PyRef& result, std::string_view who, std::string_view outcome,
                     std::string_view rule) {
  if (!result || !IsUnrunBody(result.get())) return false;
  const std::string type = Py_TYPE(result.get())->tp_name;
  // An async generator has only aclose(), which would itself have to be awaited.
  if (!PyAsyncGen_CheckExact(result.get())) {
    PyRef closed = PyRef::Steal(PyObject_CallMethod(result.get(), "close", nullptr));
    LeaveIfForkedChild();  // close() runs the body's finally: blocks
    if (!closed) PyErr_Clear();
  }
  result = PyRef();
  std::string message;
  message.append(who).append(" returned a ").append(type);
  message.append(" without running its body, so it ").append(outcome).append(": ");
  message.append(rule).append(" (take out its yield or async)");
  PyErr_SetString(PyExc_TypeError, message.c_str());
  return true;
}

}  // namespace cnp::worker
