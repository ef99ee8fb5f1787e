// couch_named_python._runtime, where the design-function semantics live in Python.
#pragma once

#include <Python.h>

namespace cnp::worker {

// The imported module (borrowed; imported on first use), or nullptr with an exception set.
PyObject* RuntimeModule();

}  // namespace cnp::worker
