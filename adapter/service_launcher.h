// Starting the host's one cnp-server when no service answers at the default unix socket.
//
// Every query-server process CouchDB starts is an adapter, and they all share one service. The
// first adapter to find the socket dead takes a lock next to it, starts cnp-server as a daemon
// (detached from CouchDB's process tree, logging to cnp-server.log next to the socket) and waits
// until it accepts connections; the others wait on the lock and then find it running.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "service/session/launch_settings.h"

namespace cnp::adapter {

struct LaunchOptions {
  std::string server_binary;  // empty: look next to this executable
  // Passed on to the service the adapter starts.
  std::vector<std::string> python_paths;
  std::vector<std::string> allowed_modules;
  std::vector<std::string> preload_modules;
  int workers = 0;  // 0: the service's default
  // Its --call-timeout (session::kAdapterCallTimeout unless the adapter's flag says otherwise).
  absl::Duration call_timeout = session::kAdapterCallTimeout;
};

// Whether something accepts connections on the unix socket at `path`.
bool UnixSocketAccepts(const std::string& path);

// cnp-server next to this executable (installed layout) or at ../service/cnp-server (Bazel's
// bazel-bin/adapter → bazel-bin/service), unless `options` names one.
absl::StatusOr<std::string> FindServerBinary(const LaunchOptions& options);

// The launch-settings text of `options` (service/session/launch_settings.h), which a server
// the adapter starts is given with --adapter-settings.
std::string LaunchSettings(const LaunchOptions& options);

// Makes sure a cnp-server listens on `socket_path`, starting one if needed, by `deadline`.
absl::Status EnsureServiceRunning(const std::string& socket_path, const LaunchOptions& options,
                                  absl::Time deadline);

// Replaces the adapter-started cnp-server `old_server` (its settings differ from `options`):
// under the launch lock, unless another adapter already did, sends it SIGTERM, waits until it
// has drained and exited, and starts one with `options`. Fails when it is still draining at
// `deadline`.
absl::Status ReplaceService(const std::string& socket_path, const LaunchOptions& options,
                            pid_t old_server, absl::Time deadline);

}  // namespace cnp::adapter
