#include "service/worker/stray_threads.h"

#include <Python.h>

#include "absl/strings/str_cat.h"
#include "service/common/log.h"

namespace cnp::worker {

int StrayPythonThreads() {
  // Every thread that runs Python has a thread state in the interpreter until it ends; the
  // worker's own threads (a direct session's watchdog) never run Python.
  PyThreadState* self = PyThreadState_Get();
  int others = 0;
  for (PyThreadState* state = PyInterpreterState_ThreadHead(self->interp); state != nullptr;
       state = PyThreadState_Next(state)) {
    if (state != self) ++others;
  }
  return others;
}

void LogStrayThreads(int threads, const std::string& what) {
  LogEvent(LogLevel::kWarning,
           absl::StrCat(threads, threads == 1 ? " Python thread" : " Python threads",
                        " a function started still ran after ", what,
                        "; the worker asks to be replaced, so that no other call or CouchDB "
                        "session runs beside them (a function's threads must end before it "
                        "returns)"),
           {});
}

}  // namespace cnp::worker
