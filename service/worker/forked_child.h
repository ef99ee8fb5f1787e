// A function may call os.fork() and let the child go on: return, raise, or sys.exit() (which the
// worker takes for a function's exception like any other). That child is a copy of the worker,
// holding CouchDB's pipes and the server's socket: left to run, it would finish the command,
// write its own answer (which CouchDB, or the server, takes for the answer to the next command,
// so documents get other documents' rows), and read the next command meant for the worker.
//
// So the worker looks, each time a function's call returns to it and before each write, whether
// it is still the process that was started: a forked child ends there, at once, with _exit(0),
// writing and flushing nothing. A child that never returns to the worker's code (one that
// exec()s, or multiprocessing's, which ends with os._exit()) is not affected.
//
// Nor may a child keep the worker's descriptors: one left running (a daemon a function started,
// a helper that sleeps) held CouchDB's pipes open, so CouchDB saw its query server's output end
// only when the child did, and the server's socket, which the server watches for the worker's
// end. Those named by a live ChildMustNotHold are pointed at /dev/null in every child as it is
// forked, before it runs anything.
#pragma once

#include <cstddef>

namespace cnp::worker {

// True in a process forked from the worker (without exec): not the worker itself.
bool InForkedChild();

// Ends the process at once (_exit(0)) when it is a forked child; nothing else otherwise.
// Async-signal-safe.
void LeaveIfForkedChild();

// While it lives, a child forked from this process has `fd` pointed at /dev/null. At most 8 at
// once (the server's socket, a direct session's two pipes and the copy SessionStop keeps); past
// that, one is not covered.
class ChildMustNotHold {
 public:
  explicit ChildMustNotHold(int fd);
  ~ChildMustNotHold();
  ChildMustNotHold(const ChildMustNotHold&) = delete;
  ChildMustNotHold& operator=(const ChildMustNotHold&) = delete;

 private:
  std::ptrdiff_t slot_ = -1;
};

}  // namespace cnp::worker
