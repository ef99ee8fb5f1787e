// UTF-8 text of Python str objects, for places that must not fail: messages, logs, ids.
#pragma once

#include <Python.h>

#include <cstddef>
#include <string>

namespace cnp::worker {

// The str's UTF-8; lone surrogates (which UTF-8 cannot hold, and protobuf strings must be
// valid UTF-8) become backslash escapes. "" for nullptr or a non-str. Never leaves an error set.
std::string Utf8Text(PyObject* text);

// At most `max_bytes` of Utf8Text(text), cut where a character ends, with "..." after it when
// cut: for naming a text of any length (a document's _id) without copying all of it.
std::string Utf8TextPrefix(PyObject* text, size_t max_bytes);

}  // namespace cnp::worker
