// Runs one map function on one document: the forms couch-named-python users write all work.
//   a generator (or any iterator)   yields (key, value) pairs, or single items -> [item, null]
//   a returned list or tuple        of pairs, treated like the yielded items
//   None                            the rows are whatever emit(key, value) collected
// emit() works in every form; rows keep the order in which they were produced.
#pragma once

#include <Python.h>

#include "service/worker/row_sink.h"

namespace cnp::worker {

// Returns false with a Python exception set when the function (or a row it produced) failed;
// the caller then discards everything written to `rows`.
bool RunMapFunction(PyObject* function, PyObject* doc, RowSink& rows);

}  // namespace cnp::worker
