// What the builtin _cnp module (log, emit, list steps) needs to know about the call in
// progress. The worker runs one call at a time, and holds the GIL, so one context per process
// is the honest model: handlers set it up around each user-function call. A thread a function
// starts is not part of its call: the callbacks refuse any thread but `call_thread`, or its
// emit() and log() would land in whatever call runs next (another CouchDB session's).
#pragma once

#include <Python.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "service/worker/answer_budget.h"
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

// Where a direct session sends a log() line at once, as couchjs does, rather than with the
// command's answer: CouchDB restarts its read timeout on each such line, and a command that then
// times out has had its lines read.
class EagerLog {
 public:
  virtual ~EagerLog() = default;
  virtual void Write(std::string_view message) = 0;
};

// Which user function is running, so that its log() lines can be attributed in the service's
// log. Handlers set it around each call into Python; it costs a few pointer stores per call, and
// the document's _id is looked up only when a line is logged.
struct LogOrigin {
  std::string_view kind;      // "map", "validate", ... (static strings)
  std::string_view function;  // the name as asked for; must outlive the call
  PyObject* doc = nullptr;    // borrowed: the document the call is about, if one
};

// The most of a document's _id an attributed line holds: CouchDB bounds no id's length, and a
// copy of a 60 MiB id for each log() call would make a few calls cost gigabytes.
inline constexpr size_t kAttributedIdBytes = 256;

// The _id of `doc` (borrowed; a dict, else "" ) for an attributed line: at most
// kAttributedIdBytes of a string; a number, true, false or null as its text, as the map's
// error line prints it; "" for none or a list or dict.
std::string AttributedDocId(PyObject* doc);

// A log() line with its origin, for the service's log (worker.proto's FunctionLog).
struct AttributedLog {
  std::string message;
  std::string function;
  std::string kind;
  std::string doc_id;
  // Set when the line is a function's exception (raised_log.h): its class and traceback.
  std::string error;
  std::string traceback;
};

struct CallContext {
  // The thread running the call (PyThread_get_thread_ident()); 0 between calls. Only it may
  // call back into the call (builtin_module.cc).
  unsigned long call_thread = 0;
  std::vector<std::string> logs;  // log() messages since the handler last took them
  // The same lines with their origin, since the task loop or direct session last took them.
  std::vector<AttributedLog> attributed_logs;
  LogOrigin origin;
  RowSink* rows = nullptr;        // where emit() writes; set only while a map function runs
  ListChannel* list = nullptr;    // set only while an interactive list runs
  EagerLog* eager_log = nullptr;  // set only in a direct session: log() lines go out at once
  // A map function of the command raised: the log() lines after it wait for the answer, which
  // tells its exception first (function by function, as couchjs writes them).
  bool eager_log_held = false;
  bool memory_error = false;      // a MemoryError was seen: the worker should be recycled
  // The room left for the answer in progress (answer_budget.h); unbounded until a task or a
  // direct-session command starts it.
  AnswerBudget answer;
};

// Raises, into the Python code running, that the answer is over its budget (marking it so):
// false, for the caller to return. A function that catches it changes nothing: the budget
// stays exceeded and the task is answered ANSWER_TOO_LARGE.
bool RaiseAnswerTooLarge();

CallContext& Context();

// Makes the thread constructing it the call's thread (CallContext::call_thread) for the
// lifetime of the scope. With the GIL held.
class ScopedCallThread {
 public:
  ScopedCallThread() : saved_(Context().call_thread) {
    Context().call_thread = PyThread_get_thread_ident();
  }
  ~ScopedCallThread() { Context().call_thread = saved_; }
  ScopedCallThread(const ScopedCallThread&) = delete;
  ScopedCallThread& operator=(const ScopedCallThread&) = delete;

 private:
  unsigned long saved_;
};

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

// Sets `origin` for the lifetime of the scope.
class ScopedLogOrigin {
 public:
  explicit ScopedLogOrigin(LogOrigin origin) : saved_(Context().origin) {
    Context().origin = origin;
  }
  ~ScopedLogOrigin() { Context().origin = saved_; }
  ScopedLogOrigin(const ScopedLogOrigin&) = delete;
  ScopedLogOrigin& operator=(const ScopedLogOrigin&) = delete;

 private:
  LogOrigin saved_;
};

}  // namespace cnp::worker
