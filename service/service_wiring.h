// The parts of the service that other modules provide: the CouchDB session (service/couchdb)
// and uploads (service/upload), bound to the worker pool.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "service/config/server_config.h"
#include "service/pool/async_task_runner.h"
#include "service/pool/task_runner.h"
#include "service/rpc/rpc_server.h"
#include "service/session/session_listener.h"
#include "service/session/session_worker_pool.h"

namespace cnp {

// Session streams, each command bounded by --call-timeout.
rpc::SessionFactory MakeSessionFactory(pool::AsyncTaskRunner& runner,
                                       const config::ServerConfig& config);
// With the upload limits and the --couchdb-allow list of `config` (already validated).
rpc::UploadHandler MakeUploadHandler(pool::TaskRunner& runner, const config::ServerConfig& config);

// The unix --listen addresses, each with its place in the list (for a setting's position in
// messages); their paths; and their direct-session sockets' paths (P.direct).
struct UnixListen {
  int index = 0;
  std::string path;
};
std::vector<UnixListen> UnixListens(const config::ServerConfig& config);
std::vector<std::string> UnixListenPaths(const config::ServerConfig& config);
std::vector<std::string> DirectSessionPaths(const config::ServerConfig& config);

// Before the workers start: a socket systemd passed that no --listen address (nor its P.direct)
// names is a setting to fix, FAILED_PRECONDITION naming it.
absl::Status CheckInheritedSocketsNamed(const config::ServerConfig& config);

// The directory of every unix socket the server will bind (gRPC listeners not passed by
// systemd, and, with direct sessions on, the direct-session sockets beside them), created or
// checked before any worker starts (listen::PrepareSocketDirectory).
absl::Status PrepareSocketDirectories(const config::ServerConfig& config);

// Direct CouchDB sessions: the session workers run the same command as the batch workers, and
// every unix --listen path P gets its session socket P.direct.
session::SessionPoolOptions SessionPoolOptionsFor(const config::ServerConfig& config);
session::ListenerOptions SessionListenerOptionsFor(const config::ServerConfig& config);

}  // namespace cnp
