#include "service/worker/map_call.h"

#include "service/worker/call_context.h"
#include "service/worker/forked_child.h"
#include "service/worker/py_ref.h"
#include "service/worker/unrun_body.h"

namespace cnp::worker {
namespace {

bool DrainIterator(PyObject* iterator, RowSink& rows) {
  for (;;) {
    PyObject* item = PyIter_Next(iterator);
    LeaveIfForkedChild();  // the generator's body ran: it may have forked
    if (item == nullptr) break;
    bool ok = rows.AddItem(item);
    Py_DECREF(item);
    if (!ok) return false;
  }
  return !PyErr_Occurred();
}

bool IsPair(PyObject* item) {
  return (PyTuple_Check(item) || PyList_Check(item)) && PySequence_Fast_GET_SIZE(item) == 2;
}

// A returned list must hold [key, value] pairs. couch-named-python ignored what a map function
// returned (so does RunMapFunction once emit() was called); a yielded item that is not a pair is the original README's `yield doc["town"]`
// ([item, null]), but a returned `("a", 1)` is a single pair meant as the list of them, which
// would be two wrong rows, ["a", null] and [1, null]: that is the author's mistake, said so.
bool AddReturnedPairs(PyObject* returned, RowSink& rows) {
  const Py_ssize_t size = PySequence_Fast_GET_SIZE(returned);
  // Rows added before a bad item are dropped with the function's other rows (the caller's).
  for (Py_ssize_t i = 0; i < size; ++i) {
    PyObject* item = PySequence_Fast_GET_ITEM(returned, i);
    if (!IsPair(item)) {
      PyErr_Format(PyExc_TypeError,
                   "a map function must return a list of [key, value] pairs, or yield key, "
                   "value; item %zd of the %s it returned is not a pair (its type is %s)",
                   i, Py_TYPE(returned)->tp_name, Py_TYPE(item)->tp_name);
      return false;
    }
    if (!rows.Add(PySequence_Fast_GET_ITEM(item, 0), PySequence_Fast_GET_ITEM(item, 1))) {
      return false;
    }
  }
  return true;
}

}  // namespace

bool RunMapFunction(PyObject* function, PyObject* doc, RowSink& rows) {
  ScopedRowSink emit_target(&rows);
  PyRef result = PyRef::Steal(PyObject_CallOneArg(function, doc));
  LeaveIfForkedChild();
  if (!result) return false;
  PyObject* value = result.get();
  // A generator is the yield form (its body runs as it is drained below); a coroutine or an
  // async generator never runs, so it emitted nothing: said so (unrun_body.h).
  if (!PyGen_Check(value) &&
      RefuseUnrunBody(result, "a map function", "emitted nothing",
                      "a map function yields (key, value) pairs, returns a list of them or "
                      "calls emit(key, value)")) {
    return false;
  }
  // couch-named-python (pyviews map_doc) kept what a function that is not a generator emitted
  // and ignored what it returned, so `emit(...); return True` has its row, and returned pairs
  // beside emit() are no rows: once emit() was called, what the function returned is ignored.
  // (A generator function has run none of its body yet: it cannot have emitted.)
  if (rows.emitted()) return true;
  // Without emit(): an early `return False` (or True, or None) is no rows and no error, as it
  // was; returned pairs are rows (cnp's own form), anything else is the author's mistake.
  if (value == Py_None || PyBool_Check(value)) return true;
  if (PyList_Check(value) || PyTuple_Check(value)) return AddReturnedPairs(value, rows);
  if (PyIter_Check(value)) return DrainIterator(value, rows);
  // A str or dict is iterable too, but iterating it is never what the author meant.
  PyErr_Format(PyExc_TypeError,
               "a map function must yield (key, value) pairs, return a list of them, or "
               "call emit(key, value); it returned %s",
               Py_TYPE(value)->tp_name);
  return false;
}

}  // namespace cnp::worker
