// Python reads a module's code from its source file or from the bytecode cache beside it
// (__pycache__/NAME.cpython-311.pyc), and takes the cache whenever its header matches the
// source's mtime and size. Whoever may write to the cache, or to the __pycache__ directory
// it is in, runs code as the worker with the source untouched, and the module policy's check
// of the source (module_policy.h) never sees it.
//
// So every file the import machinery reads code from - a source, a cache, a bare .pyc, a
// .pth file, a zip archive, an extension module: whatever goes through io.open_code - is
// opened by this guard, which refuses one that belongs to another user than root and the
// worker's, or that its group or others may write to (common/code_ownership.h), and a cache
// whose __pycache__ directory is such. It checks the file it opened (fstat), not the name, so
// nothing can be swapped in between. CPython 3.11 reads a bare NAME.pyc (no NAME.py beside
// it) with io.FileIO and dlopens an extension (NAME.so, NAME.cpython-311-...so) by its name,
// neither through io.open_code: GuardLoadersWithoutOpenCode routes both through it, and since
// dlopen opens the extension again by its name, an extension's directory must pass too (a
// file nobody else may write, in a directory nobody else may write to, cannot be swapped).
// It costs one fstat per file read, and one stat per cache or extension.
#pragma once

#include <Python.h>

#include "absl/status/status.h"

namespace cnp::worker {

// Installs the guard as Python's open_code hook. Called once, before the interpreter starts
// (StartInterpreter does).
absl::Status InstallCodeFileGuard();

// Sends the loaders that read code without io.open_code (importlib's SourcelessFileLoader and
// ExtensionFileLoader) through the guard. Called once the interpreter runs, before anything
// outside the standard library is imported (StartInterpreter does).
absl::Status GuardLoadersWithoutOpenCode();

// Whether `exception` is the guard's refusal: an ImportError whose message names the file,
// what is wrong with it and the fix (`chmod go-w ...`, or removing the cache), whichever loader
// read the file.
bool IsCodeFileRefusal(PyObject* exception);

}  // namespace cnp::worker
