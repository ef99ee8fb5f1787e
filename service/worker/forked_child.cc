#include "service/worker/forked_child.h"

#include <sys/types.h>
#include <unistd.h>

namespace cnp::worker {
namespace {

// Read at load, before any function could have forked: the worker is exec()'d by the server,
// and tests running the worker's code in their own process do not fork without exec.
const pid_t g_worker_pid = ::getpid();

}  // namespace

bool InForkedChild() { return ::getpid() != g_worker_pid; }

void LeaveIfForkedChild() {
  if (InForkedChild()) ::_exit(0);
}

}  // namespace cnp::worker
