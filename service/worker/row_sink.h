// Collects one map function's rows for one document as the JSON array CouchDB expects:
// [[key, value], ...]. Rows arrive from emit() and from what the function yields or returns,
// in the order they are produced.
#pragma once

#include <Python.h>

#include "service/worker/json_buffer.h"
#include "service/worker/python_to_json.h"

namespace cnp::worker {

class RowSink {
 public:
  // Appends to `out`, which must outlive the sink; "[" is written at once.
  explicit RowSink(JsonBuffer& out);
  // Counts the rows without writing them (`scratch` gets nothing but the "["): a view filter
  // only asks whether a map function emits, and couchjs's emit() there only sets a flag, so a
  // row JSON cannot carry still counts and fails nothing.
  struct CountOnly {};
  RowSink(JsonBuffer& scratch, CountOnly);

  // Appends [key, value]. On failure (a value that is not JSON) nothing is appended and a
  // Python exception is set, so a caller that catches it can go on emitting.
  bool Add(PyObject* key, PyObject* value);
  // A yielded item: a 2-tuple or 2-list is [key, value]; anything else is [item, null], which
  // is how couch-named-python treated `yield doc["town"]`.
  bool AddItem(PyObject* item);
  // Writes the closing "]".
  void Finish();

  // emit() was called (whether or not its row could be written): couch-named-python then
  // kept what the function emitted and ignored what it returned (map_call.h).
  void NoteEmit() { emitted_ = true; }
  bool emitted() const { return emitted_; }

  size_t rows() const { return rows_; }

 private:
  JsonBuffer& out_;
  PythonJsonWriter writer_;
  size_t rows_ = 0;
  bool count_only_ = false;
  bool emitted_ = false;
};

}  // namespace cnp::worker
