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
#pragma once

namespace cnp::worker {

// True in a process forked from the worker (without exec): not the worker itself.
bool InForkedChild();

// Ends the process at once (_exit(0)) when it is a forked child; nothing else otherwise.
// Async-signal-safe.
void LeaveIfForkedChild();

}  // namespace cnp::worker
