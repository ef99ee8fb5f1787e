// cnp-server's settings: every flag its command line and its config file may give, with the
// default and the help text --help prints. server_config.cc reads them, checks them and makes
// the ServerConfig the server runs with; absl's own flags (--flagfile, --fromenv...) are none.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

ABSL_DECLARE_FLAG(std::string, config);
ABSL_DECLARE_FLAG(std::vector<std::string>, listen);
ABSL_DECLARE_FLAG(int, workers);
ABSL_DECLARE_FLAG(int, grpc_threads);
ABSL_DECLARE_FLAG(std::string, worker_binary);
ABSL_DECLARE_FLAG(std::vector<std::string>, python_path);
ABSL_DECLARE_FLAG(std::string, virtualenv);
ABSL_DECLARE_FLAG(std::vector<std::string>, allow_module);
ABSL_DECLARE_FLAG(std::vector<std::string>, preload_module);
ABSL_DECLARE_FLAG(absl::Duration, worker_start_timeout);
ABSL_DECLARE_FLAG(absl::Duration, call_timeout);
ABSL_DECLARE_FLAG(absl::Duration, shutdown_grace);
ABSL_DECLARE_FLAG(absl::Duration, drain_delay);
ABSL_DECLARE_FLAG(int, max_queue);
ABSL_DECLARE_FLAG(int64_t, max_docs_per_call);
ABSL_DECLARE_FLAG(int64_t, max_call_bytes);
ABSL_DECLARE_FLAG(int64_t, max_grpc_memory);
ABSL_DECLARE_FLAG(int64_t, max_session_design_memory);
ABSL_DECLARE_FLAG(int, max_connections_per_peer);
ABSL_DECLARE_FLAG(absl::Duration, first_call_timeout);
ABSL_DECLARE_FLAG(absl::Duration, max_connection_idle);
ABSL_DECLARE_FLAG(int64_t, max_calls_per_worker);
ABSL_DECLARE_FLAG(int64_t, worker_memory_mb);
ABSL_DECLARE_FLAG(std::string, log_level);
ABSL_DECLARE_FLAG(std::string, log_format);
ABSL_DECLARE_FLAG(int64_t, log_max_bytes);
ABSL_DECLARE_FLAG(std::string, metrics_listen);
ABSL_DECLARE_FLAG(int, ready_fd);
ABSL_DECLARE_FLAG(int, launch_lock_fd);
ABSL_DECLARE_FLAG(int, max_sessions);
ABSL_DECLARE_FLAG(int, spare_session_workers);
ABSL_DECLARE_FLAG(std::vector<std::string>, allow_uid);
ABSL_DECLARE_FLAG(std::string, adapter_settings);
ABSL_DECLARE_FLAG(std::vector<std::string>, couchdb_allow);
ABSL_DECLARE_FLAG(int, max_waiting_uploads);
ABSL_DECLARE_FLAG(int64_t, max_yaml_bytes);
ABSL_DECLARE_FLAG(int64_t, max_yaml_nodes);
ABSL_DECLARE_FLAG(int64_t, max_design_bytes);
ABSL_DECLARE_FLAG(int64_t, max_couchdb_response_bytes);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, tls_client_ca);
ABSL_DECLARE_FLAG(std::string, auth_token_file);
ABSL_DECLARE_FLAG(bool, insecure);
ABSL_DECLARE_FLAG(bool, metrics_public);
ABSL_DECLARE_FLAG(std::string, socket_group);
ABSL_DECLARE_FLAG(bool, reflection);
ABSL_DECLARE_FLAG(std::string, access_log);

namespace cnp::config {

// Whether `file`, where a flag is defined as absl records it (__FILE__), is server_flags.cc: the
// flags defined there are cnp-server's settings. absl also has flags of its own (--flagfile,
// --fromenv, --undefok...), which neither --help nor a config file may reach: `flagfile:
// /etc/passwd` would read that file as flags.
bool IsServerFlagsFile(absl::string_view file);

}  // namespace cnp::config
