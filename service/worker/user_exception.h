// A Python exception raised by user code, taken off the interpreter as plain data.
#pragma once

#include <Python.h>

#include <string>
#include <vector>

#include "service/worker/py_ref.h"

namespace cnp::worker {

struct UserException {
  std::string type;     // the class name, e.g. "KeyError"
  std::string message;  // str(exception)
  PyRef value;          // the exception object (its __traceback__ set), for handlers and logs
  // Where the operator's code raised it: the innermost frame of the traceback whose file lies
  // under an operator directory, "views/town.py:8 in townmap" (empty when none does).
  std::string where;

  // "'town' (views/town.py:8 in townmap)": the message, and where when known ("(views/...)"
  // alone for an exception raised without a message).
  std::string Detail() const {
    if (where.empty()) return message;
    if (message.empty()) return "(" + where + ")";
    return message + " (" + where + ")";
  }
  // "KeyError: 'town' (views/town.py:8 in townmap)", couch-named-python's form with the place.
  std::string Summary() const {
    std::string detail = Detail();
    return detail.empty() ? type : type + ": " + detail;
  }
};

// Takes the pending Python exception (one must be set) and clears it. A MemoryError also
// marks the worker for recycling.
UserException TakeException();

// The operator's code directories (absolute, and their real paths), which WhereRaised looks
// for. Set once at start-up, before any user code runs.
void SetOperatorDirectories(std::vector<std::string> dirs);

// "views/town.py:8 in townmap" for the innermost frame of `traceback` (a traceback object, or
// nullptr) whose file lies under an operator directory, the path relative to that directory;
// "" when there is none. Walks the frames without formatting anything: it runs for every
// document a broken map function raises on.
std::string WhereRaised(PyObject* traceback);

}  // namespace cnp::worker
