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

// A started cnp-worker child: its pid and the parent's end of its socketpair (non-blocking,
// close-on-exec). The caller owns both: it must close the socket and reap the child.
struct SpawnedWorker {
  pid_t pid = -1;
  int fd = -1;
};
absl::StatusOr<SpawnedWorker> SpawnWorkerChild(const WorkerCommand& command);

// "exited with status 1", "killed by signal 9 (Killed)".
std::string DescribeWaitStatus(int status);

}  // namespace cnp::pool
