#include "service/service_wiring.h"

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/unix_target.h"
#include "service/listen/inherited_sockets.h"
#include "service/listen/listen_address.h"
#include "service/listen/listening_socket.h"
#include "service/rpc/query_session_handler.h"
#include "service/session/direct_socket_path.h"
#include "service/session/launch_settings.h"
#include "service/upload/uploader.h"

namespace cnp {

rpc::SessionFactory MakeSessionFactory(pool::AsyncTaskRunner& runner,
                                       const config::ServerConfig& config) {
  return rpc::QuerySessionFactory(runner, config.call_timeout, config.max_call_bytes,
                                  config.max_session_design_memory,
                                  /*started_by_adapter=*/!config.adapter_settings.empty());
}

rpc::UploadHandler MakeUploadHandler(pool::TaskRunner& runner, const config::ServerConfig& config) {
  upload::Uploader::Options options;
  options.yaml_limits.max_file_bytes = config.max_yaml_bytes;
  options.yaml_limits.max_nodes = config.max_yaml_nodes;
  options.yaml_limits.max_json_bytes = config.max_design_bytes;
  options.max_couchdb_response_bytes = config.max_couchdb_response_bytes;
  options.couchdb_allow = upload::CouchAllowList::FromPrefixes(config.couchdb_allow).value();
  auto uploader = std::make_shared<const upload::Uploader>(runner, std::move(options));
  return [uploader](const v1::UploadRequest& request, const rpc::UploadEmit& emit,
                    std::stop_token stop) { return uploader->Run(request, emit, stop); };
}

std::vector<UnixListen> UnixListens(const config::ServerConfig& config) {
  std::vector<UnixListen> listens;
  for (size_t i = 0; i < config.listen.size(); ++i) {
    // A unix --listen that does not read as one path was refused with the configuration.
    if (absl::StatusOr<std::string> path = UnixSocketPath(config.listen[i]); path.ok()) {
      listens.push_back({.index = static_cast<int>(i), .path = *std::move(path)});
    }
  }
  return listens;
}

std::vector<std::string> UnixListenPaths(const config::ServerConfig& config) {
  std::vector<std::string> paths;
  for (UnixListen& unix_listen : UnixListens(config)) {
    paths.push_back(std::move(unix_listen.path));
  }
  return paths;
}

std::vector<std::string> DirectSessionPaths(const config::ServerConfig& config) {
  std::vector<std::string> paths;
  for (const std::string& path : UnixListenPaths(config)) {
    paths.push_back(session::DirectSocketPath(path));
  }
  return paths;
}

absl::Status CheckInheritedSocketsNamed(const config::ServerConfig& config) {
  std::vector<std::string> unix_paths = UnixListenPaths(config);
  for (const std::string& path : DirectSessionPaths(config)) unix_paths.push_back(path);
  std::vector<listen::TcpListen> tcp;
  std::vector<std::string> addresses = config.listen;
  // The metrics listener takes a passed socket as the gRPC listeners do.
  if (!config.metrics_listen.empty()) addresses.push_back(config.metrics_listen);
  for (const std::string& address : addresses) {
    if (UnixSocketPath(address).ok()) continue;
    // Read as the listener will; one that does not read was refused with the configuration.
    if (absl::StatusOr<listen::TcpListenAddress> parsed = listen::ParseTcpListenAddress(address);
        parsed.ok()) {
      tcp.push_back({.port = parsed->port, .host = parsed->host});
    }
  }
  return listen::CheckInheritedSocketsNamed(unix_paths, tcp);
}

absl::Status PrepareSocketDirectories(const config::ServerConfig& config) {
  for (const UnixListen& unix_listen : UnixListens(config)) {
    std::vector<std::string> paths = {unix_listen.path};
    // Without direct sessions nothing binds P.direct (a passed one is only taken, and closed).
    if (config.max_sessions > 0) paths.push_back(session::DirectSocketPath(unix_listen.path));
    for (const std::string& socket : paths) {
      if (listen::IsInheritedUnixSocket(socket)) continue;  // its directory is the unit's
      if (absl::Status s = listen::PrepareSocketDirectory(socket, {.gid = config.socket_gid});
          !s.ok()) {
        return config.Attributed(
            "listen", unix_listen.index,
            absl::Status(s.code(), absl::StrCat("unix:", socket, ": ", s.message())));
      }
    }
  }
  return absl::OkStatus();
}

session::SessionPoolOptions SessionPoolOptionsFor(const config::ServerConfig& config) {
  session::SessionPoolOptions options;
  options.command = {config.worker_binary, config.WorkerArgs()};
  // Direct sessions come only through a unix socket: a replica that listens on TCP alone
  // never gets one, and keeps no spare worker (a Python process) waiting for it.
  options.max_sessions = DirectSessionPaths(config).empty() ? 0 : config.max_sessions;
  options.spare_workers = config.spare_session_workers;
  options.startup_timeout = config.worker_start_timeout;
  // A start is mostly a CPU's work (Python starting and importing): more at once than cores
  // only slows each of them.
  options.max_parallel_starts = std::clamp<int>(std::thread::hardware_concurrency(), 2, 8);
  options.memory_cap_bytes = config.worker_memory_mb << 20;
  options.max_calls_per_worker = config.max_calls_per_worker;
  return options;
}

session::ListenerOptions SessionListenerOptionsFor(const config::ServerConfig& config) {
  session::ListenerOptions options;
  options.paths = DirectSessionPaths(config);
  options.allowed_uids = config.allow_uid;
  options.socket_gid = config.socket_gid;
  options.adapter_settings = config.adapter_settings;
  options.call_timeout = config.call_timeout;
  options.max_answer_bytes = config.max_call_bytes;
  options.access_log = config.access_log;
  options.own_settings = session::LaunchSettingsText(config.python_path, config.allow_module,
                                                     config.requested_workers,
                                                     config.preload_module,
                                                     config.call_timeout);
  return options;
}

}  // namespace cnp
