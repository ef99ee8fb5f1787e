#include "service/worker/user_exception.h"

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

}  // namespace

UserException TakeException() {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  UserException result;
  result.value = PyRef::Steal(value);
  PyRef type_ref = PyRef::Steal(type);
  Py_XDECREF(traceback);
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
  return result;
}

}  // namespace cnp::worker
