// A Python exception raised by user code, taken off the interpreter as plain data.
#pragma once

#include <string>

#include "service/worker/py_ref.h"

namespace cnp::worker {

struct UserException {
  std::string type;     // the class name, e.g. "KeyError"
  std::string message;  // str(exception)
  PyRef value;          // the exception object, for handlers that look at its class

  // "KeyError: 'town'", the form couch-named-python reported.
  std::string Summary() const { return message.empty() ? type : type + ": " + message; }
};

// Takes the pending Python exception (one must be set) and clears it. A MemoryError also
// marks the worker for recycling.
UserException TakeException();

}  // namespace cnp::worker
