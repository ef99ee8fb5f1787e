// UTF-8 text of Python str objects, for places that must not fail: messages, logs, ids.
#pragma once

#include <Python.h>

#include <string>

namespace cnp::worker {

// The str's UTF-8; lone surrogates (which UTF-8 cannot hold, and protobuf strings must be
// valid UTF-8) become backslash escapes. "" for nullptr or a non-str. Never leaves an error set.
std::string Utf8Text(PyObject* text);

}  // namespace cnp::worker
