#include "service/worker/map_call.h"

#include "service/worker/call_context.h"
#include "service/worker/py_ref.h"

namespace cnp::worker {
namespace {

bool DrainIterator(PyObject* iterator, RowSink& rows) {
  while (PyObject* item = PyIter_Next(iterator)) {
    bool ok = rows.AddItem(item);
    Py_DECREF(item);
    if (!ok) return false;
  }
  return !PyErr_Occurred();
}

}  // namespace

bool RunMapFunction(PyObject* function, PyObject* doc, RowSink& rows) {
  ScopedRowSink emit_target(&rows);
  PyRef result = PyRef::Steal(PyObject_CallOneArg(function, doc));
  if (!result) return false;
  PyObject* value = result.get();
  if (value == Py_None) return true;
  if (PyList_Check(value) || PyTuple_Check(value)) {
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(value); ++i) {
      if (!rows.AddItem(PySequence_Fast_GET_ITEM(value, i))) return false;
    }
    return true;
  }
  if (PyIter_Check(value)) return DrainIterator(value, rows);
  // A str or dict is iterable too, but iterating it is never what the author meant.
  PyErr_Format(PyExc_TypeError,
               "a map function must yield (key, value) pairs, return a list of them, or "
               "return None after calling emit(); it returned %s",
               Py_TYPE(value)->tp_name);
  return false;
}

}  // namespace cnp::worker
