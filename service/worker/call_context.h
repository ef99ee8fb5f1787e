// What the builtin _cnp module (log, emit, list steps) needs to know about the call in
// progress. The worker is single-threaded and holds the GIL, so one context per process is
// the honest model: handlers set it up around each user-function call.
#pragma once

#include <Python.h>

#include <string>
#include <vector>

#include "service/worker/py_ref.h"
#include "service/worker/row_sink.h"

namespace cnp::worker {

// The I/O behind get_row() in an interactive list: sends one step reply and waits for the
// next row. Returns the row, None after list_end, or nullptr with a Python exception set.
class ListChannel {
 public:
  virtual ~ListChannel() = default;
  virtual PyObject* Step(PyObject* step) = 0;
};

struct CallContext {
  std::vector<std::string> logs;  // log() messages since the handler last took them
  RowSink* rows = nullptr;        // where emit() writes; set only while a map function runs
  ListChannel* list = nullptr;    // set only while an interactive list runs
  bool memory_error = false;      // a MemoryError was seen: the worker should be recycled
};

CallContext& Context();

// Sets `rows` for the lifetime of the scope.
class ScopedRowSink {
 public:
  explicit ScopedRowSink(RowSink* rows) : saved_(Context().rows) { Context().rows = rows; }
  ~ScopedRowSink() { Context().rows = saved_; }
  ScopedRowSink(const ScopedRowSink&) = delete;
  ScopedRowSink& operator=(const ScopedRowSink&) = delete;

 private:
  RowSink* saved_;
};

}  // namespace cnp::worker
