// A function with a yield in it, or written async def, returns a generator (a coroutine, an
// async generator) when called, without running a line of its body. Where the function's
// result is CouchDB's answer, taking that object for it passes what the body would have
// refused (a validator raising nothing accepts every document) or fails later on a message
// that does not say why; the callers make it a TypeError saying why instead. The Python side
// (couch_named_python/_unrun.py) says the same for filters, shows, updates, rewrites and lists.
#pragma once

#include <Python.h>

#include <string_view>

#include "service/worker/py_ref.h"

namespace cnp::worker {

// Whether `value` is a generator, coroutine or async generator.
bool IsUnrunBody(PyObject* value);

// What calling `callable` gives back, read from its code's flags without calling it: for
// Resolve, so that cnp check can refuse a generator filter before it is uploaded. Anything but
// a Python function is kPlain (the registry refuses other callables anyway).
enum class Body { kPlain, kGenerator, kCoroutine, kAsyncGenerator };
Body BodyOf(PyObject* callable);

// If `result` is one, closes it (a coroutine never awaited warns on the worker's stderr
// otherwise), drops it and sets TypeError "<who> returned a <type> without running its body,
// so it <outcome>: <rule> (take out its yield or async)"; returns whether it did.
bool RefuseUnrunBody(PyRef& result, std::string_view who, std::string_view outcome,
                     std::string_view rule);

}  // namespace cnp::worker
