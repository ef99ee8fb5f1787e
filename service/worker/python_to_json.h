// Python objects -> JSON text, with rapidjson's Writer doing the escaping.
//
// Matches what CouchDB and json.dumps expect: ints of any size exact, floats as repr() (0.1,
// 1e+300, -0.0), NaN and infinities as null (like JavaScript's JSON.stringify), tuples as
// arrays, dict keys that are str/int/float/bool/None converted as json.dumps converts them,
// lone surrogates in a str as \uXXXX escapes (as couchjs writes them; CouchDB reads U+FFFD).
// Anything else (a set, an arbitrary object, a key of another type) raises TypeError.
//
// Every Write is bounded by the room left for the answer in progress (call_context.h's
// AnswerBudget): `out` may grow to at most that many bytes (what it holds already counts, as
// answer bytes not yet taken into a reply). A value that would pass it, however many times it
// refers to the same objects, is stopped there: RuntimeError, the budget marked exceeded.
#pragma once

#include <cstddef>

#include <Python.h>

#include "service/worker/json_buffer.h"

namespace cnp::worker {

class PythonJsonWriter {
 public:
  explicit PythonJsonWriter(JsonBuffer& out) : out_(out), writer_(out) {}

  // Appends one JSON value. Returns false with a Python exception set; what was appended by
  // the failed call is then removed, so `out` still ends where it did before the call.
  bool Write(PyObject* value);

  // Appends [first, second] (a map row) with the same all-or-nothing guarantee.
  bool WritePair(PyObject* first, PyObject* second);

  JsonBuffer& buffer() { return out_; }

 private:
  bool WriteValue(PyObject* value, int depth);
  bool WriteKey(PyObject* key);
  bool WriteFloat(double value);
  // The slow path for a str UTF-8 cannot encode (a lone surrogate), as a value or a key.
  [[gnu::cold, gnu::noinline]] bool WriteUnencodableString(PyObject* text);
  bool Rollback(size_t mark);
  // The buffer could not grow (json_buffer.h): MemoryError, and the buffer as before.
  [[gnu::cold, gnu::noinline]] bool OutOfMemory(size_t mark);
  [[gnu::cold, gnu::noinline]] bool TooLarge();

  JsonBuffer& out_;
  size_t limit_ = 0;  // the size `out_` may reach in the Write in progress
  JsonWriter writer_;
};

}  // namespace cnp::worker
