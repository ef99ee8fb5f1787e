// The worker's life: read a Task frame, run it, write its Reply, until the server hangs up.
#pragma once

#include "absl/status/status.h"
#include "service/worker/function_registry.h"

namespace cnp::worker {

// Returns OK when the server closed the socket between tasks, an error otherwise.
absl::Status ServeTasks(int fd, FunctionRegistry& registry);

}  // namespace cnp::worker
