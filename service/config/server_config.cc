#include "service/config/server_config.h"

#include <unistd.h>

#include <filesystem>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/lib/default_target.h"
#include "service/upload/couch_allow_list.h"
#include "yaml-cpp/yaml.h"

ABSL_FLAG(std::string, config, "", "YAML file with any of these flags as keys (lists for the "
          "repeatable ones); flags on the command line win");
ABSL_FLAG(std::vector<std::string>, listen, {},
          "where to listen: unix:/path or host:port; repeatable (default: $CNP_TARGET or "
          "unix:/tmp/cnp-<uid>/cnp.sock)");
ABSL_FLAG(int, workers, 0, "worker processes, each with its own Python (default: CPU cores)");
ABSL_FLAG(int, grpc_threads, 0,
          "gRPC threads, each polling its own completion queue and running its calls, with a "
          "standby thread for its long waits (default: 2 x workers + 2)");
ABSL_FLAG(std::string, worker_binary, "",
          "path of cnp-worker (default: next to cnp-server)");
ABSL_FLAG(std::vector<std::string>, python_path, {},
          "directory holding the users' Python modules; repeatable. PYTHONPATH is honoured too");
ABSL_FLAG(std::string, virtualenv, "", "a virtualenv whose site-packages holds the modules");
ABSL_FLAG(std::vector<std::string>, allow_module, {},
          "module prefix whose functions may be called (e.g. myviews); repeatable. Without it, "
          "any module found in --python-path, PYTHONPATH or --virtualenv is allowed, never the "
          "standard library");
ABSL_FLAG(absl::Duration, call_timeout, absl::Seconds(60),
          "longest a call may run; its worker is then killed and replaced");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(30),
          "on SIGTERM, how long calls in flight may take to finish");
ABSL_FLAG(int, max_queue, 256, "calls that may wait for a busy worker; more are refused with "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_calls_per_worker, 0, "replace a worker after this many calls (0: never)");
ABSL_FLAG(int64_t, worker_memory_mb, 2048,
          "memory cap per worker in MiB: allocations above it raise MemoryError in the function "
          "and the worker is replaced (0: no cap)");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(int, ready_fd, -1,
          "write \"ready\\n\" to this file descriptor and close it once every address is "
          "listening (for supervisors and tests that start the server)");
ABSL_FLAG(int, max_sessions, 64,
          "direct CouchDB sessions served at once, each by its own worker (an adapter on this "
          "host hands CouchDB's pipes to it); more use the gRPC Session stream. 0: none");
ABSL_FLAG(int, spare_session_workers, 1,
          "started workers kept ready so a new direct session does not wait for Python");
ABSL_FLAG(std::vector<std::string>, allow_uid, {},
          "uid allowed to use this server's unix sockets besides its own; repeatable");
ABSL_FLAG(std::string, adapter_settings, "",
          "set by cnp-adapter when it starts the server: the settings it started it with, so "
          "an adapter with other settings replaces it (operators leave this empty)");

ABSL_FLAG(std::vector<std::string>, couchdb_allow, {},
          "URL prefix of a CouchDB that Upload may write to, e.g. https://couch:6984; "
          "repeatable; * allows any http(s) URL (default: CouchDB on this host only: "
          "localhost, 127.0.0.0/8, [::1])");
ABSL_FLAG(int64_t, max_yaml_bytes, int64_t{4} << 20,
          "Upload: the largest YAML file accepted, in bytes");
ABSL_FLAG(int64_t, max_yaml_nodes, 1000000,
          "Upload: YAML nodes one request may expand to, each use of an alias counted anew "
          "(stops alias bombs)");
ABSL_FLAG(int64_t, max_design_bytes, int64_t{64} << 20,
          "Upload: bytes of JSON one request's YAML may expand to");
ABSL_FLAG(int64_t, max_couchdb_response_bytes, int64_t{64} << 20,
          "Upload: the longest answer read from CouchDB, in bytes");

namespace cnp::config {
namespace {

constexpr const char* kRepeatable[] = {"listen", "python_path", "allow_module", "couchdb_allow",
                                       "allow_uid"};

std::string FlagName(absl::string_view arg) {
  arg.remove_prefix(arg.size() > 1 && arg[1] == '-' ? 2 : 1);
  std::string name(arg.substr(0, arg.find('=')));
  for (char& c : name) if (c == '-') c = '_';
  return name;
}

// absl keeps only the last value of a repeated flag; these flags add up instead, and may also
// be spelled with dashes (--python-path), which absl does not accept.
std::vector<char*> NormaliseArgs(int argc, char** argv, std::vector<std::string>& storage,
                                 std::map<std::string, std::vector<std::string>>& repeated) {
  std::vector<char*> out{argv[0]};
  storage.reserve(argc * 2);
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") {
      for (; i < argc; ++i) out.push_back(argv[i]);
      break;
    }
    if (!absl::StartsWith(arg, "-") || arg.size() < 2) {
      out.push_back(argv[i]);
      continue;
    }
    std::string name = FlagName(arg);
    size_t eq = arg.find('=');
    bool is_repeatable = std::find(std::begin(kRepeatable), std::end(kRepeatable), name) !=
                         std::end(kRepeatable);
    if (is_repeatable) {
      std::string value;
      if (eq != absl::string_view::npos) {
        value = std::string(arg.substr(eq + 1));
      } else if (i + 1 < argc) {
        value = argv[++i];
      }
      for (absl::string_view v : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        repeated[name].emplace_back(v);
      }
      continue;
    }
    storage.push_back(absl::StrCat("--", name,
                                   eq == absl::string_view::npos ? "" : arg.substr(eq)));
    out.push_back(storage.back().data());
  }
  return out;
}

absl::Status ApplyYaml(const std::string& path,
                       std::map<std::string, std::vector<std::string>>& repeated) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read config file ", path, ": ", e.what()));
  }
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a mapping of flag names to values"));
  }
  for (const auto& entry : root) {
    std::string name = entry.first.as<std::string>();
    for (char& c : name) if (c == '-') c = '_';
    const YAML::Node& value = entry.second;
    std::string where = absl::StrCat(path, ":", entry.first.Mark().line + 1);
    bool is_repeatable = std::find(std::begin(kRepeatable), std::end(kRepeatable), name) !=
                         std::end(kRepeatable);
    if (is_repeatable) {
      if (repeated.count(name)) continue;  // the command line wins
      if (value.IsSequence()) {
        for (const auto& v : value) repeated[name].push_back(v.as<std::string>());
      } else {
        repeated[name].push_back(value.as<std::string>());
      }
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr || name == "config") {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown setting '", name, "'"));
    }
    std::string error;
    if (!value.IsScalar() || !flag->ParseFrom(value.as<std::string>(), &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": bad value for '", name, "': ", error));
    }
  }
  return absl::OkStatus();
}

// Next to cnp-server, or in its Bazel runfiles. In the runfiles case the worker is told where
// they are, since its own Python package sits beside it there.
std::string DefaultWorkerBinary() {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  std::filesystem::path runfiles = self.string() + ".runfiles";
  if (std::filesystem::exists(runfiles / "cnp/service/worker/cnp-worker", ec)) {
    ::setenv("RUNFILES_DIR", runfiles.c_str(), /*overwrite=*/0);
    return (runfiles / "cnp/service/worker/cnp-worker").string();
  }
  for (const char* candidate : {"worker/cnp-worker", "cnp-worker"}) {
    std::filesystem::path p = self.parent_path() / candidate;
    if (std::filesystem::exists(p, ec)) return p.string();
  }
  return (self.parent_path() / "cnp-worker").string();
}

}  // namespace

std::vector<std::string> ServerConfig::WorkerArgs() const {
  std::vector<std::string> args{"--fd=3"};
  for (const std::string& p : python_path) args.push_back(absl::StrCat("--python-path=", p));
  if (!virtualenv.empty()) args.push_back(absl::StrCat("--virtualenv=", virtualenv));
  for (const std::string& m : allow_module) args.push_back(absl::StrCat("--allow-module=", m));
  if (worker_memory_mb > 0) args.push_back(absl::StrCat("--memory-limit-mb=", worker_memory_mb));
  return args;
}

absl::StatusOr<ServerConfig> LoadServerConfig(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "cnp-server: runs named Python functions for CouchDB (Map, Reduce, Validate, design "
      "functions, Upload) over gRPC, in a supervised pool of embedded-Python workers.\n\n"
      "  cnp-server --python-path=/srv/views --allow-module=myviews\n\n"
      "SIGHUP reloads every worker (rolling); SIGTERM stops gracefully.");
  std::vector<std::string> storage;
  std::map<std::string, std::vector<std::string>> repeated;
  std::vector<char*> args = NormaliseArgs(argc, argv, storage, repeated);

  // The config file comes first so that the command line overrides it.
  for (char* arg : args) {
    absl::string_view a = arg;
    if (absl::StartsWith(a, "--config=")) {
      if (absl::Status s = ApplyYaml(std::string(a.substr(9)), repeated); !s.ok()) return s;
    }
  }
  std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (positional.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unexpected argument '", positional[1], "'; every setting is a --flag (see --help)"));
  }

  ServerConfig c;
  c.listen = repeated.count("listen") ? repeated["listen"] : absl::GetFlag(FLAGS_listen);
  if (c.listen.empty()) c.listen.push_back(cnp::client::DefaultTarget());
  c.python_path = repeated.count("python_path") ? repeated["python_path"] : absl::GetFlag(FLAGS_python_path);
  c.allow_module = repeated.count("allow_module") ? repeated["allow_module"] : absl::GetFlag(FLAGS_allow_module);
  c.workers = absl::GetFlag(FLAGS_workers);
  c.requested_workers = c.workers;
  if (c.workers <= 0) c.workers = std::max(1u, std::thread::hardware_concurrency());
  c.grpc_threads = absl::GetFlag(FLAGS_grpc_threads);
  if (c.grpc_threads <= 0) c.grpc_threads = 2 * c.workers + 2;
  c.worker_binary = absl::GetFlag(FLAGS_worker_binary);
  if (c.worker_binary.empty()) c.worker_binary = DefaultWorkerBinary();
  if (::access(c.worker_binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("the worker binary ", c.worker_binary,
                                            " is missing or not executable; set --worker-binary"));
  }
  c.virtualenv = absl::GetFlag(FLAGS_virtualenv);
  c.call_timeout = absl::GetFlag(FLAGS_call_timeout);
  c.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  c.max_queue = absl::GetFlag(FLAGS_max_queue);
  c.max_calls_per_worker = absl::GetFlag(FLAGS_max_calls_per_worker);
  c.worker_memory_mb = absl::GetFlag(FLAGS_worker_memory_mb);
  c.log_level = absl::GetFlag(FLAGS_log_level);
  c.ready_fd = absl::GetFlag(FLAGS_ready_fd);
  c.couchdb_allow = repeated.count("couchdb_allow") ? repeated["couchdb_allow"]
                                                    : absl::GetFlag(FLAGS_couchdb_allow);
  if (absl::StatusOr<upload::CouchAllowList> allow =
          upload::CouchAllowList::FromPrefixes(c.couchdb_allow);
      !allow.ok()) {
    return allow.status();
  }
  c.max_yaml_bytes = absl::GetFlag(FLAGS_max_yaml_bytes);
  c.max_yaml_nodes = absl::GetFlag(FLAGS_max_yaml_nodes);
  c.max_design_bytes = absl::GetFlag(FLAGS_max_design_bytes);
  c.max_couchdb_response_bytes = absl::GetFlag(FLAGS_max_couchdb_response_bytes);
  for (auto [name, value] : {std::pair{"--max-yaml-bytes", c.max_yaml_bytes},
                             std::pair{"--max-yaml-nodes", c.max_yaml_nodes},
                             std::pair{"--max-design-bytes", c.max_design_bytes},
                             std::pair{"--max-couchdb-response-bytes",
                                       c.max_couchdb_response_bytes}}) {
    if (value <= 0) return absl::InvalidArgumentError(absl::StrCat(name, " must be positive"));
  }
  c.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  c.spare_session_workers = absl::GetFlag(FLAGS_spare_session_workers);
  c.adapter_settings = absl::GetFlag(FLAGS_adapter_settings);
  for (const std::string& uid : repeated.count("allow_uid") ? repeated["allow_uid"]
                                                            : absl::GetFlag(FLAGS_allow_uid)) {
    int value = 0;
    if (!absl::SimpleAtoi(uid, &value) || value < 0) {
      return absl::InvalidArgumentError(absl::StrCat("--allow-uid ", uid, " is not a uid"));
    }
    c.allow_uid.push_back(static_cast<uid_t>(value));
  }
  if (c.call_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--call-timeout must be positive");
  }
  for (const std::string& dir : c.python_path) {
    if (!std::filesystem::is_directory(dir)) {
      return absl::NotFoundError(absl::StrCat("--python-path ", dir, " is not a directory"));
    }
  }
  return c;
}

}  // namespace cnp::config
