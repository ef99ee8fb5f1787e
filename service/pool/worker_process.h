// How a cnp-worker child (an embedded CPython, reached over a socketpair) is spawned, and how its
// end is described; ProcessWorker (process_worker.h) drives it.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cnp::pool {

struct WorkerCommand {
  std::string binary;             // path of cnp-worker
  std::vector<std::string> args;  // after argv[0]; the socket is always fd 3
};

// A started cnp-worker child: its pid, the parent's end of its socketpair (non-blocking,
// close-on-exec), and the read end of the pipe its stdout and stderr write to (close-on-exec;
// worker_output_relay.h). The worker writes its own log lines to the server's stderr, which it
// gets as descriptor 4 (--log-fd=4). The caller owns all three: it must close the descriptors
// and reap the child.
struct SpawnedWorker {
  pid_t pid = -1;
  int fd = -1;
  int output = -1;
};
absl::StatusOr<SpawnedWorker> SpawnWorkerChild(const WorkerCommand& command);

// "exited with status 1", "killed by signal 9 (Killed)".
std::string DescribeWaitStatus(int status);

}  // namespace cnp::pool
