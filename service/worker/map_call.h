// Runs one map function on one document: the forms couch-named-python users write all work.
//   emit(key, value) called         the rows it emitted; what the function returned is
//                                   ignored, as couch-named-python ignored it
//   a generator (or any iterator)   yields (key, value) pairs, or single items -> [item, null]
//   a returned list or tuple        of pairs (without emit()), treated like the yielded items
//   None, True or False             without emit(): no rows (an early `return False`)
// emit() works in a generator too; rows keep the order in which they were produced.
#pragma once

#include <Python.h>

#include "service/worker/row_sink.h"

namespace cnp::worker {

// Returns false with a Python exception set when the function (or a row it produced) failed;
// the caller then discards everything written to `rows`.
bool RunMapFunction(PyObject* function, PyObject* doc, RowSink& rows);

}  // namespace cnp::worker
