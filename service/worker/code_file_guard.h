// Python reads a module's code from its source file or from the bytecode cache beside it
// (__pycache__/NAME.cpython-311.pyc), and takes the cache whenever its header matches the
// source's mtime and size. Whoever may write to the cache, or to the __pycache__ directory
// it is in, runs code as the worker with the source untouched, and the module policy's check
// of the source (module_policy.h) never sees it.
//
// So every file the import machinery reads code from - a source, a cache, a .pth file, a zip
// archive: whatever goes through io.open_code - is opened by this guard, which refuses one
// that belongs to another user than root and the worker's, or that its group or others may
// write to (common/code_ownership.h), and a cache whose __pycache__ directory is such. It
// checks the file it opened (fstat), not the name, so nothing can be swapped in between; it
// costs one fstat per file read, and one stat per cache.
#pragma once

#include <Python.h>

#include "absl/status/status.h"

namespace cnp::worker {

// Installs the guard as Python's open_code hook. Called once, before the interpreter starts
// (StartInterpreter does).
absl::Status InstallCodeFileGuard();

// Whether `exception` is the guard's refusal: an ImportError whose message names the file,
// what is wrong with it and the fix (`chmod go-w ...`, or removing the cache).
bool IsCodeFileRefusal(PyObject* exception);

}  // namespace cnp::worker
