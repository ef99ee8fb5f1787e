// What a worker's process writes to its stdout and stderr outside Python's print: os.write(1,
// ...), a subprocess a function started, a C library, CPython's own fatal errors. The worker's
// descriptors 1 and 2 are a pipe the server reads (worker_process.cc), and each line written
// there reaches the log as a WARN event of its own, its control characters escaped (in either
// --log-format), with the worker's pid, at most 200 lines and 256 KiB a second for all workers
// together (the next second's first line says how many were left out). Written raw to the log,
// as before, a function's subprocess that echoed what its documents hold let whoever writes
// documents put lines in the log that passed for the server's own, and broke its JSON.
//
// One thread of the server reads every worker's pipe (started with the first worker), not the
// control loop: a read pending there would keep its io_context working for as long as the
// worker lives, and a flood of output would hold the loop up.
#pragma once

#include <sys/types.h>

namespace cnp::pool {

// Reads `pipe_fd` (taken over) until every process holding its write end has ended (the worker
// and what it started), relaying each line as above.
void RelayWorkerOutput(int pipe_fd, pid_t pid);

}  // namespace cnp::pool
