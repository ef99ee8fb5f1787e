#include "service/worker/builtin_module.h"

#include <Python.h>
#include <unistd.h>

#include <new>
#include <optional>
#include <string>

#include "service/common/function_log.h"
#include "service/common/line_budget.h"
#include "service/common/log.h"
#include "service/worker/accepted_arguments.h"
#include "service/worker/call_context.h"
#include "service/worker/json_buffer.h"
#include "service/worker/map_call.h"
#include "service/worker/py_ref.h"
#include "service/worker/py_text.h"
#include "service/worker/python_to_json.h"
#include "service/worker/user_exception.h"

namespace cnp::worker {

namespace {

// What log() sends for `message`: a str as it is; anything else as JSON text, as couchjs and
// couchdb-python's view server send it (log({"n": 1}) logs {"n":1}), or, for what JSON cannot
// carry (an exception, a set), its str(). Empty with a Python exception set on failure.
std::optional<std::string> LogText(PyObject* message, CallContext& context) {
  if (PyUnicode_Check(message)) return Utf8Text(message);
  JsonBuffer json;
  if (PythonJsonWriter(json).Write(message)) return std::string(json.GetString(), json.GetSize());
  if (PyErr_ExceptionMatches(PyExc_MemoryError)) return std::nullopt;
  // Past the answer's room: the line could not be sent in any form.
  if (context.answer.exceeded()) return std::nullopt;
  PyErr_Clear();
  PyRef text = PyRef::Steal(PyObject_Str(message));
  if (!text) return std::nullopt;
  return Utf8Text(text.get());
}

// Whether the thread calling `what`() is the one running the call (call_context.h); if not,
// false with a RuntimeError set. A thread the function started gets the error: what it sent
// would go into another call's answer, maybe another session's.
bool OnCallThread(const char* what) {
  const unsigned long call_thread = Context().call_thread;
  if (call_thread != 0 && call_thread == PyThread_get_thread_ident()) return true;
  if (call_thread == 0) {
    PyErr_Format(PyExc_RuntimeError,
                 "%s() called outside a call of a function: a thread the function started "
                 "must not outlive its call",
                 what);
  } else {
    PyErr_Format(PyExc_RuntimeError,
                 "%s() called from another thread than the function's: only the thread "
                 "cnp-worker called the function on may use it, or its output would go into "
                 "another call's answer",
                 what);
  }
  return false;
}

PyObject* LogLine(PyObject* message) {
  if (!OnCallThread("log")) return nullptr;
  CallContext& context = Context();
  std::optional<std::string> text = LogText(message, context);
  if (!text.has_value()) return nullptr;
  std::string line = *std::move(text);
  // A line is part of the answer (CouchDB gets it before the reply): it must fit in it. One
  // sent at once takes no room from the answer, but is bounded as one.
  if (line.size() > context.answer.room()) {
    RaiseAnswerTooLarge();
    return nullptr;
  }
  const LogOrigin& origin = context.origin;
  std::string doc_id = AttributedDocId(origin.doc);
  const size_t attributed_bytes = line.size() + origin.function.size() + origin.kind.size() + doc_id.size();
  context.attributed_logs.push_back({line, std::string(origin.function),
                                     std::string(origin.kind), std::move(doc_id)});
  if (context.eager_log != nullptr && !context.eager_log_held) {
    // It also writes the operator's copy now: none is held.
    context.eager_log->Write(line);
    Py_RETURN_NONE;
  }
  // The line and its attributed copy are both held to the end (a task's reply carries both),
  // so both take room: an empty line still costs its copy's origin.
  context.answer.Take(line.size() + attributed_bytes);
  context.logs.push_back(std::move(line));
  Py_RETURN_NONE;
}

// What functions print reaches the log at most as fast as their log() lines do
// (function_log.h): a function that prints what its documents hold let whoever writes documents
// fill the log as fast as the worker ran (50 MB in a second, a probe), in text as raw lines that
// could pass for the server's own.
LineBudget& PrintedLines() {
  static LineBudget budget(kFunctionLogLinesPerSecond, kFunctionLogBytesPerSecond,
                           "printed lines of functions");
  return budget;
}

// output_line(stream, line): a line a function printed (sys.stdout or sys.stderr, which
// couch_named_python/_output.py sends here): one event of the worker's log, attributed to the
// function running, its control characters escaped in text and JSON alike. A WARN: printing is
// not how a function in a service reports (log() is), and the line stays as visible as the raw
// text it replaces.
PyObject* OutputLine(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1])) {
    PyErr_SetString(PyExc_TypeError, "output_line(stream, line) takes two str");
    return nullptr;
  }
  try {
    PrintedLines().Write([&] {
      const std::string stream = Utf8Text(args[0]);
      const std::string line = Utf8Text(args[1]);
      // Printed by a thread the function started: the line is logged, but is not the call's
      // (the call running now may be another's), so it names no function.
      static const LogOrigin kNoOrigin{};
      const unsigned long call_thread = Context().call_thread;
      const LogOrigin& origin = call_thread != 0 && call_thread == PyThread_get_thread_ident()
                                    ? Context().origin
                                    : kNoOrigin;
      const std::string doc_id = AttributedDocId(origin.doc);
      const absl::string_view function(origin.function.data(), origin.function.size());
      const absl::string_view kind(origin.kind.data(), origin.kind.size());
      return FormatEvent(
          LogLevel::kWarning, line,
          {{"stream", stream}, {"function", function}, {"kind", kind}, {"doc_id", doc_id}});
    });
  } catch (const std::bad_alloc&) {
    return PyErr_NoMemory();
  }
  Py_RETURN_NONE;
}

// Python calls the functions below: no C++ exception may leave them (json_buffer.h), and
// memory the worker's C++ cannot get is the caller's MemoryError.
PyObject* Log(PyObject*, PyObject* message) {
  try {
    return LogLine(message);
  } catch (const std::bad_alloc&) {
    return PyErr_NoMemory();
  }
}

PyObject* Emit(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  // emit(key) is JavaScript's emit(doc.town): the value is null, as couchjs makes it.
  if (nargs != 1 && nargs != 2) {
    PyErr_Format(PyExc_TypeError,
                 "emit() takes a key and a value (the value may be left out), %zd given", nargs);
    return nullptr;
  }
  if (!OnCallThread("emit")) return nullptr;
  RowSink* rows = Context().rows;
  if (rows == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "emit() can only be called while a map function runs");
    return nullptr;
  }
  rows->NoteEmit();
  if (!rows->Add(args[0], nargs == 2 ? args[1] : Py_None)) return nullptr;
  Py_RETURN_NONE;
}

PyObject* ListStep(PyObject*, PyObject* step) {
  if (!OnCallThread("get_row")) return nullptr;
  ListChannel* list = Context().list;
  if (list == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "no interactive list is running");
    return nullptr;
  }
  try {
    return list->Step(step);
  } catch (const std::bad_alloc&) {
    return PyErr_NoMemory();
  }
}

// map_emits(function, doc) -> bool: whether the map function emitted at least one row, for
// view filters; its rows are counted, not written (RowSink::CountOnly). Exceptions propagate.
PyObject* MapEmits(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "map_emits(function, doc)");
    return nullptr;
  }
  // It sets the call's row sink (ScopedRowSink) while it runs.
  if (!OnCallThread("map_emits")) return nullptr;
  try {
    JsonBuffer scratch;
    RowSink rows(scratch, RowSink::CountOnly{});
    if (!RunMapFunction(args[0], args[1], rows)) return nullptr;
    return PyBool_FromLong(rows.rows() > 0);
  } catch (const std::bad_alloc&) {
    return PyErr_NoMemory();
  }
}

// call(function, *args): calls a validate or design function with the arguments it accepts
// (accepted_arguments.h), for the design-function runtime (_runtime.py, _render.py).
PyObject* CallAccepting(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1) {
    PyErr_SetString(PyExc_TypeError, "call(function, *args)");
    return nullptr;
  }
  return CallWithAcceptedArguments(args[0], args + 1, nargs - 1);
}

// where_raised(exception) -> str: "views/town.py:8 in townmap", the innermost frame of the
// operator's code in its traceback, or "" (user_exception.h).
PyObject* WhereRaisedIn(PyObject*, PyObject* exception) {
  if (!PyExceptionInstance_Check(exception)) {
    PyErr_SetString(PyExc_TypeError, "where_raised(exception)");
    return nullptr;
  }
  try {
    PyRef traceback = PyRef::Steal(PyException_GetTraceback(exception));
    std::string where = WhereRaised(traceback.get());
    return PyUnicode_FromStringAndSize(where.data(), static_cast<Py_ssize_t>(where.size()));
  } catch (const std::bad_alloc&) {
    return PyErr_NoMemory();
  }
}

PyMethodDef kMethods[] = {
    {"log", Log, METH_O, "log(message): send a log line to CouchDB with this call's reply."},
    {"emit", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Emit)), METH_FASTCALL,
     "emit(key, value): add a row from a map function."},
    {"list_step", ListStep, METH_O,
     "list_step(step): send an interactive list step and wait for the next row."},
    {"map_emits", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(MapEmits)),
     METH_FASTCALL, "map_emits(function, doc): whether a map function emits for doc."},
    {"call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(CallAccepting)),
     METH_FASTCALL, "call(function, *args): call function with the arguments it accepts."},
    {"output_line", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(OutputLine)),
     METH_FASTCALL, "output_line(stream, line): a printed line, as an event of the worker's log."},
    {"where_raised", WhereRaisedIn, METH_O,
     "where_raised(exception): the innermost frame of the operator's code in its traceback."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef kModule = {
    PyModuleDef_HEAD_INIT, "_cnp", "Hooks into cnp-worker for couch_named_python.", -1, kMethods,
};

PyObject* InitModule() { return PyModule_Create(&kModule); }

}  // namespace

void RegisterBuiltinModule() { PyImport_AppendInittab("_cnp", &InitModule); }

}  // namespace cnp::worker
