// cnp-server's configuration: command-line flags, optionally on top of a YAML file whose keys
// are the flag names (--config=FILE). The command line wins over the file.
//
// The parts, in the order LoadServerConfig uses them: server_flags (the settings, their
// defaults and help), command_line (repeatable settings and --config taken out, the rest judged
// before absl parses it), config_file (the YAML file), setting_sources (where each value came
// from, so that an error names the flag or the file's line), and server_config.cc itself (each
// value checked, alone and against the others).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace cnp::config {

struct Sources;

struct ServerConfig {
  std::vector<std::string> listen;
  int workers = 0;
  int grpc_threads = 0;
  std::string worker_binary;
  std::vector<std::string> python_path;
  std::string virtualenv;
  std::vector<std::string> allow_module;
  std::vector<std::string> preload_module;  // imported by each worker as it starts
  absl::Duration call_timeout;
  absl::Duration worker_start_timeout;  // a worker's start, its preloads included
  absl::Duration shutdown_grace;
  absl::Duration drain_delay;  // NOT_SERVING on health, still serving, before the shutdown
  // Connections (service/rpc/connection_acceptor.h).
  int max_connections_per_peer = 0;   // TCP connections of one address; 0: no limit
  absl::Duration first_call_timeout;  // TCP connections without an admitted call are closed
  absl::Duration max_connection_idle;  // connections with no call open are closed
  int max_queue = 0;
  int64_t max_docs_per_call = 0;
  int64_t max_call_bytes = 0;
  int64_t max_grpc_memory = 0;  // resolved: never 0 once loaded
  int64_t max_session_design_memory = 0;  // all Session streams' design documents together
  int64_t max_calls_per_worker = 0;
  int64_t worker_memory_mb = 0;
  std::string log_level;
  std::string log_format;      // text or json
  int64_t log_max_bytes = 0;   // a log file past it is copied to FILE.1 and emptied; 0: never
  std::string metrics_listen;  // empty: no metrics endpoint
  int ready_fd = -1;
  int launch_lock_fd = -1;  // cnp-adapter's launch lock, held until the server listens
  // Upload: where it may go and what a request may cost.
  std::vector<std::string> couchdb_allow;
  int max_waiting_uploads = 0;  // admitted uploads that may wait for an upload thread
  int64_t max_yaml_bytes = 0;
  int64_t max_yaml_nodes = 0;
  int64_t max_design_bytes = 0;
  int64_t max_couchdb_response_bytes = 0;
  // Direct CouchDB sessions (service/session).
  int max_sessions = 0;
  int spare_session_workers = 0;
  std::vector<uid_t> allow_uid;
  std::string adapter_settings;  // non-empty: started by cnp-adapter with these settings
  int requested_workers = 0;     // --workers as given (0: defaulted)

  // Who may connect (README "Security").
  std::string tls_cert;       // PEM certificate chain: TCP listeners speak TLS
  std::string tls_key;        // its private key
  std::string tls_client_ca;  // PEM CAs: TCP clients must present a certificate they signed
  std::string auth_token_file;  // TCP calls must carry "authorization: Bearer <its content>"
  bool insecure = false;      // allow plaintext TCP on non-loopback addresses
  bool metrics_public = false;  // allow --metrics-listen on a non-loopback address, only that
  bool reflection = false;    // serve gRPC reflection (--reflection)
  int socket_gid = -1;        // --socket-group: unix sockets 0660 and directories 0750
  std::string access_log;     // empty: the server's own log (stderr)

  // The worker's command-line arguments that carry this configuration.
  std::vector<std::string> WorkerArgs() const;

  // `status`, which a check made once the configuration was read (of what only the system can
  // tell: a log file to open, a socket directory) worded about a setting ("--access-log: cannot
  // open ..."), reworded about the config file's line when the value came from there
  // ("FILE:LINE:COLUMN: access-log: cannot open ..."). `item`: which of a list's values.
  absl::Status Attributed(absl::string_view setting, int item, const absl::Status& status) const;

  // Where each value came from (setting_sources.h), for Attributed; null: the command line.
  std::shared_ptr<const Sources> sources;
};

// Parses argv (and the --config file). Returns an error a user can act on for bad values;
// --help and --version exit from inside.
absl::StatusOr<ServerConfig> LoadServerConfig(int argc, char** argv);

}  // namespace cnp::config
