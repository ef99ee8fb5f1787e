// Proving that a freshly spawned worker came up: it must answer its first frame (a Resolve of
// nothing: Python started and couch_named_python imported, no user code run) in time. Both the
// batch pool and the direct-session pool start workers this way.
#pragma once

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "asio/io_context.hpp"
#include "service/pool/worker_process.h"

namespace cnp::pool {

// Sends the handshake and awaits the answer on `control` without blocking it (starting Python
// takes tens of milliseconds, and other workers may need the loop meanwhile). OK, or
// DEADLINE_EXCEEDED after `timeout`, or why the answer was missing or wrong. The worker is left
// as it is: on an error the caller reaps or kills it and says what happened.
asio::awaitable<absl::Status> AwaitWorkerStartup(WorkerProcess& process, asio::io_context& control,
                                                 absl::Duration timeout);

}  // namespace cnp::pool
