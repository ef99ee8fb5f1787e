// CouchDB passes every function of a kind the same arguments: a validate_doc_update gets
// (new, old, userctx, secobj), a filter, show or update (doc, req), a list (head, req), a
// generator list (head, req, rows). Python modules written for older servers, or by authors
// who need less, declare fewer: (new, old, userctx), (new, old), f(doc). This is the one rule
// for what such a function is given, used by every call of a validate or design function
// (validate_task.cc directly, _runtime.py and _render.py through _cnp.call):
//   - a plain function with fewer positional parameters than CouchDB passes gets the first N,
//     N counting parameters with defaults and ignoring keyword-only ones;
//   - a function with *args, or one that takes as many or more, gets everything;
//   - a function with no positional parameter at all gets everything too: every kind needs at
//     least its first argument, so Python's TypeError says what is wrong.
// Reduce has its own, older rule (reduce_task.cc: exactly two parameters get keys, values).
#pragma once

#include <Python.h>

namespace cnp::worker {

// How many positional parameters `function`'s own code declares (those with defaults
// included, keyword-only ones not); -1 when it takes *args or is not a Python function.
int PositionalParameters(PyObject* function);

// Calls `function` with as many of `args[0..count)` as the rule above gives it. Returns a new
// reference, or nullptr with the Python exception set.
PyObject* CallWithAcceptedArguments(PyObject* function, PyObject* const* args, Py_ssize_t count);

}  // namespace cnp::worker
