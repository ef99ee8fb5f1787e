#include "service/worker/row_sink.h"

#include <new>

namespace cnp::worker {

RowSink::RowSink(JsonBuffer& out) : out_(out), writer_(out) { out_.Put('['); }

RowSink::RowSink(JsonBuffer& scratch, CountOnly) : RowSink(scratch) { count_only_ = true; }

bool RowSink::Add(PyObject* key, PyObject* value) {
  if (count_only_) {
    ++rows_;
    return true;
  }
  if (rows_ > 0) {
    // Called under Python's frames (emit()), which no C++ exception may cross.
    try {
      out_.Put(',');
    } catch (const std::bad_alloc&) {
      PyErr_NoMemory();
      return false;
    }
  }
  if (!writer_.WritePair(key, value)) {
    if (rows_ > 0) out_.Pop(1);
    return false;
  }
  ++rows_;
  return true;
}

bool RowSink::AddItem(PyObject* item) {
  if ((PyTuple_Check(item) || PyList_Check(item)) && PySequence_Fast_GET_SIZE(item) == 2) {
    return Add(PySequence_Fast_GET_ITEM(item, 0), PySequence_Fast_GET_ITEM(item, 1));
  }
  // `yield 1, 2, 3` is a tuple that was meant as a pair, not the key [1, 2, 3]; a list is a
  // key (`yield [year, month]`-style keys are written as lists).
  if (PyTuple_Check(item)) {
    PyErr_Format(PyExc_TypeError,
                 "a map function yields key, value (two items); it yielded a tuple of %zd "
                 "items (to yield a key alone, for [key, null], yield a list or one value)",
                 PyTuple_GET_SIZE(item));
    return false;
  }
  return Add(item, Py_None);
}

void RowSink::Finish() { out_.Put(']'); }

}  // namespace cnp::worker
