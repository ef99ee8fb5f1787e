#include "service/config/server_config.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/code_directories.h"
#include "common/default_target.h"
#include "common/flag_help.h"
#include "common/list_flags.h"
#include "common/module_name.h"
#include "common/pem_file.h"
#include "common/printable_text.h"
#include "common/process_limits.h"
#include "common/secret_file.h"
#include "common/system_user.h"
#include "common/trusted_file.h"
#include "common/unix_target.h"
#include "common/version.h"
#include "service/common/framing.h"
#include "service/common/log.h"
#include "service/config/command_line.h"
#include "service/config/config_file.h"
#include "service/config/server_flags.h"
#include "service/config/server_settings.h"
#include "service/config/setting_sources.h"
#include "service/listen/listen_address.h"
#include "service/session/direct_socket_path.h"
#include "service/upload/couch_allow_list.h"

namespace cnp::config {
namespace {

// The largest --max-call-bytes: a worker's frame less 1 MiB for the task's other fields.
constexpr int64_t kLargestMaxCallBytes = int64_t{kMaxFrameBytes} - (int64_t{1} << 20);
static_assert(kLargestMaxCallBytes < std::numeric_limits<int>::max());

// Whether this process may give a file to `gid`: root may, others only to a group they are in
// (chown(2)).
bool MayGiveFilesTo(gid_t gid) {
  if (::geteuid() == 0 || ::getegid() == gid) return true;
  const int count = ::getgroups(0, nullptr);
  if (count <= 0) return false;
  std::vector<gid_t> groups(static_cast<size_t>(count));
  const int got = ::getgroups(count, groups.data());
  return got > 0 && std::find(groups.begin(), groups.begin() + got, gid) != groups.begin() + got;
}

absl::StatusOr<int> ResolveGroup(const std::string& name) {
  gid_t gid = 0;
  uint32_t number = 0;
  if (absl::SimpleAtoi(name, &number)) {
    // (gid_t)-1 is chown's "leave the group": the sockets would quietly stay 0600.
    if (number == static_cast<uint32_t>(static_cast<gid_t>(-1))) {
      return absl::InvalidArgumentError(
          absl::StrCat("--socket-group: ", name, " is no group id"));
    }
    gid = static_cast<gid_t>(number);
  } else {
    std::vector<char> buffer(16384);
    group entry{};
    group* found = nullptr;
    if (::getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
        found == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("--socket-group: no group named '", name,
                       "' (give a group name or a number)"));
    }
    gid = found->gr_gid;
  }
  // Found now rather than when the socket is made, after every worker has started, with exit
  // 1 (a setting's mistake is exit 2, which systemd's unit does not restart in a loop).
  if (!MayGiveFilesTo(gid)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--socket-group: cnp-server runs as uid ", ::geteuid(), ", which is not in group '",
        name, "' (gid ", gid, ") and so cannot give its sockets to it; run it with that group "
        "(systemd: Group=, or SupplementaryGroups=), or leave the setting out"));
  }
  return static_cast<int>(gid);
}

// The whole-number settings and the range each may take (one check, whichever way they were
// set).
absl::Status CheckAtLeast(const Sources& sources, absl::string_view name, int64_t value,
                          int64_t least, absl::string_view meaning_of_least) {
  if (value >= least) return absl::OkStatus();
  return OutOfRange(sources, name,
                    meaning_of_least.empty()
                        ? absl::StrCat(least, " or more")
                        : absl::StrCat(least, " (", meaning_of_least, ") or more"),
                    absl::StrCat(value));
}

absl::Status CheckBetween(const Sources& sources, absl::string_view name, int64_t value,
                          int64_t least, int64_t most, absl::string_view meaning_of_least) {
  if (value >= least && value <= most) return absl::OkStatus();
  return OutOfRange(sources, name,
                    absl::StrCat("between ", least, " (", meaning_of_least, ") and ", most),
                    absl::StrCat(value));
}

// The most threads --grpc-threads starts (one completion queue each): far past what helps, and
// far from what the system refuses, which aborted the server after its workers were up (not an
// exit 2 systemd would stop restarting on).
constexpr int64_t kMaxGrpcThreads = 256;
// The most uploads --max-waiting-uploads lets wait: more than any server sees, and far from the
// int the upload threads are added to (INT_MAX overflowed it, and every Upload was refused).
constexpr int64_t kMaxWaitingUploads = 1000000;

// A count of processes the server starts: without a ceiling, --workers=100000 forked until
// the OOM killer ended the server (common/process_limits.h).
absl::Status CheckProcessCount(const Sources& sources, absl::string_view name, int64_t value,
                               absl::string_view meaning_of_zero) {
  if (value >= 0 && value <= kMaxWorkerProcesses) return absl::OkStatus();
  return OutOfRange(sources, name,
                    absl::StrCat("between 0 (", meaning_of_zero, ") and ", kMaxWorkerProcesses),
                    absl::StrCat(value));
}

// absl reads `inf` and any length as a duration, and the server hands them to clocks as counts
// of nanoseconds from now, which overflow: --drain-delay=inf drained not at all,
// --first-call-timeout=inf closed connections after about a second. A year is past any wait
// an operator means and far from any overflow.
constexpr absl::Duration kLongestDuration = absl::Hours(24 * 365);

absl::Status CheckNotOverlong(const Sources& sources, absl::string_view name,
                              absl::Duration value) {
  if (value <= kLongestDuration) return absl::OkStatus();
  return OutOfRange(sources, name,
                    absl::StrCat("at most ", absl::FormatDuration(kLongestDuration), " (a year)"),
                    absl::FormatDuration(value));
}

absl::Status CheckNotNegative(const Sources& sources, absl::string_view name,
                              absl::Duration value, absl::string_view meaning_of_zero) {
  if (value < absl::ZeroDuration()) {
    return OutOfRange(sources, name, absl::StrCat("0s (", meaning_of_zero, ") or longer"),
                      absl::FormatDuration(value));
  }
  return CheckNotOverlong(sources, name, value);
}

// A misspelt --preload-module is refused at start, rather than logged by every worker that
// starts; so is an --allow-module entry no module can have ("*", " myviews", "myviews."),
// which let the server start and then refused every call.
absl::Status CheckModuleNames(const Sources& sources, absl::string_view setting,
                              const std::vector<std::string>& modules) {
  for (size_t i = 0; i < modules.size(); ++i) {
    const std::string& module = modules[i];
    const std::string why = WhyNotAModuleName(module);
    if (why.empty()) continue;
    const std::string flag = absl::StrReplaceAll(setting, {{"_", "-"}});
    return absl::InvalidArgumentError(absl::StrCat(
        sources.FromFile(setting)
            ? absl::StrCat(Subject(sources, setting, static_cast<int>(i)), " ",
                           Printable(module))
            : absl::StrCat("--", flag, "=", Printable(module)),
        ": ", why));
  }
  return absl::OkStatus();
}

// A --ready-fd that is not open for writing was accepted, and "ready" went nowhere: a
// supervisor waiting on its end of the pipe waited for good.
absl::Status CheckReadyFd(int fd) {
  if (fd == -1) return absl::OkStatus();
  const int flags = fd < 0 ? -1 : ::fcntl(fd, F_GETFL);
  if (flags == -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--ready-fd=", fd, " is not an open file descriptor of this process: give the "
        "descriptor of the pipe the supervisor waits on, as it passed it (or leave the flag out)"));
  }
  if ((flags & O_ACCMODE) == O_RDONLY) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--ready-fd=", fd, " is open for reading only; the server writes \"ready\" to it: give "
        "the pipe's write end"));
  }
  return absl::OkStatus();
}

// A --launch-lock-fd that is not open, or is one of the standard three, was accepted, and
// the server closed whatever it was once listening (cnp-adapter passes its lock's descriptor).
absl::Status CheckLaunchLockFd(int fd) {
  if (fd == -1) return absl::OkStatus();
  const bool standard = fd >= 0 && fd <= STDERR_FILENO;
  if (standard || fd < 0 || ::fcntl(fd, F_GETFD) == -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--launch-lock-fd=", fd,
        standard ? " is the server's standard input, output or error"
                 : " is not an open file descriptor of this process",
        ": cnp-adapter sets it to the descriptor of its launch lock; leave the flag out"));
  }
  return absl::OkStatus();
}

// The address a --listen binds, spelled one way: unix:/PATH and unix:///PATH are one file,
// as are a relative path and the absolute one it names; ipv4:HOST:PORT is HOST:PORT. None for
// port 0: each such listener gets a port of its own from the kernel.
std::optional<std::string> BoundAddress(const std::string& listen) {
  if (IsUnixTarget(listen)) {
    absl::StatusOr<std::string> path = UnixSocketPath(listen);
    if (!path.ok()) return listen;
    std::error_code error;
    std::filesystem::path absolute = std::filesystem::absolute(*path, error);
    if (error) absolute = *path;
    return absl::StrCat("unix:", absolute.lexically_normal().string());
  }
  absl::StatusOr<listen::TcpListenAddress> tcp = listen::ParseTcpListenAddress(listen);
  if (!tcp.ok()) return listen;
  if (tcp->port == 0) return std::nullopt;
  return tcp->host_port;
}

// An address named twice was bound twice: the second bind failed as "another server already
// listens" (unix) or "Address already in use" (TCP), after the workers had started, about the
// server's own first listener.
absl::Status CheckEachAddressOnce(const ServerConfig& c, const Sources& sources) {
  std::map<std::string, size_t> first_named;
  for (size_t i = 0; i < c.listen.size(); ++i) {
    const std::optional<std::string> bound = BoundAddress(c.listen[i]);
    if (!bound.has_value()) continue;
    const auto [first, fresh] = first_named.emplace(*bound, i);
    if (fresh) continue;
    const std::string& earlier = c.listen[first->second];
    const std::string as = earlier == c.listen[i] ? "" : absl::StrCat(" (as ", earlier, ")");
    if (sources.FromFile("listen") != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(Subject(sources, "listen", static_cast<int>(i)), " ", c.listen[i],
                       " is already listed", as, "; list each address once"));
    }
    return absl::InvalidArgumentError(absl::StrCat("--listen=", c.listen[i], " is given twice", as,
                                                   "; give each address once"));
  }
  return absl::OkStatus();
}

// A unix --listen is read as gRPC's clients read it (common/unix_target.h): one it would read as
// another file, or not connect to, is refused here rather than bound where no client arrives.
// Each unix --listen path P also gets the direct-session socket P.direct, 7 bytes longer: a P
// that fits a unix socket address while P.direct does not once made the server crash after it
// had started listening. Both are refused before anything is bound.
absl::Status CheckUnixListenPaths(const ServerConfig& c, const Sources& sources) {
  constexpr size_t kLongestPath = sizeof(sockaddr_un::sun_path) - 1;
  for (size_t i = 0; i < c.listen.size(); ++i) {
    const std::string& listen = c.listen[i];
    if (!IsUnixTarget(listen)) continue;
    absl::StatusOr<std::string> path = UnixSocketPath(listen);
    if (!path.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          sources.FromFile("listen") ? Subject(sources, "listen", i) : "--listen:", " ",
          path.status().message()));
    }
    const bool in_file = sources.FromFile("listen") != nullptr;
    if (path->size() > kLongestPath) {
      // Refused here, before any worker starts, like the direct socket's path below: the bind
      // would fail only once the workers had started.
      return absl::InvalidArgumentError(absl::StrCat(
          in_file ? absl::StrCat(Subject(sources, "listen", i), " ", listen)
                  : absl::StrCat("--listen=", listen),
          ": a unix socket path may have at most ", kLongestPath, " bytes, and this one has ",
          path->size(), "; listen in a directory with a shorter path"));
    }
    if (c.max_sessions == 0) continue;
    const std::string direct = session::DirectSocketPath(*path);
    if (direct.size() > kLongestPath) {
      return absl::InvalidArgumentError(absl::StrCat(
          in_file ? absl::StrCat(Subject(sources, "listen", i), " ", listen)
                  : absl::StrCat("--listen=", listen),
          ": the direct-session socket next to it, ", direct, ", would be ", direct.size(),
          " bytes, and a unix socket path may have at most ", kLongestPath,
          "; listen on a path of at most ", kLongestPath - (direct.size() - path->size()),
          " bytes, or ",
          in_file ? "set max-sessions: 0" : "pass --max-sessions=0", " (no direct sessions)"));
    }
  }
  return absl::OkStatus();
}

// Plaintext beyond loopback: whoever can reach the address could run the functions and read
// what they return, and a bearer token would cross the network readable. TLS beyond loopback
// with neither a token nor client certificates: whoever can reach it could run them. Refused here, before
// any worker starts (it once was refused only once the listeners opened, with the workers
// already running). The listener checks again what it bound (service/rpc/rpc_server.cc): a
// socket systemd passes for the port is taken whatever address --listen names.
absl::Status CheckPlaintextListeners(const ServerConfig& c, const Sources& sources) {
  const bool tls = !c.tls_cert.empty() && !c.tls_key.empty();
  for (size_t i = 0; i < c.listen.size(); ++i) {
    const std::string& listen = c.listen[i];
    if (IsUnixTarget(listen)) continue;
    absl::StatusOr<listen::TcpListenAddress> address = listen::ParseTcpListenAddress(listen);
    absl::StatusOr<bool> loopback =
        address.ok() ? listen::ListensOnLoopbackOnly(listen) : address.status();
    if (!loopback.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          sources.FromFile("listen") ? Subject(sources, "listen", i) : "--listen:", " ",
          loopback.status().message()));
    }
    if (*loopback) continue;
    const bool in_file = sources.FromFile("listen") != nullptr;
    auto refuse = [&](absl::string_view why, absl::string_view setting_advice,
                      absl::string_view flag_advice) {
      return absl::FailedPreconditionError(absl::StrCat(
          in_file ? absl::StrCat(Subject(sources, "listen", i), " ") : "", "refusing to listen on ",
          address->host_port, " ", why, in_file ? setting_advice : flag_advice));
    };
    if (tls) {
      // TLS keeps the calls private, but says nothing of who makes them: anyone who can reach
      // the address could run functions. A token or client certificates say who may.
      if (!c.auth_token_file.empty() || !c.tls_client_ca.empty() || c.insecure) continue;
      return refuse("with nothing to say who may call: TLS keeps the calls private, but anyone "
                    "who can reach it could run functions. ",
                    "Set auth-token-file (a bearer token every call must carry) or tls-client-ca "
                    "(clients need a certificate those CAs signed), listen on 127.0.0.1 or a unix "
                    "socket, or set insecure: true if every host that can reach it may call",
                    "Give --auth-token-file (a bearer token every call must carry) or "
                    "--tls-client-ca (clients need a certificate those CAs signed), listen on "
                    "127.0.0.1 or a unix socket, or pass --insecure if every host that can reach "
                    "it may call");
    }
    if (!c.insecure) {
      return refuse("in plaintext: anyone who can reach it could run functions and read what "
                    "they return. ",
                    "Set tls-cert and tls-key (and tls-client-ca or auth-token-file to say who "
                    "may call), listen on 127.0.0.1 or a unix socket, or set insecure: true if "
                    "the network is trusted",
                    "Give --tls-cert and --tls-key (and --tls-client-ca or --auth-token-file "
                    "to say who may call), listen on 127.0.0.1 or a unix socket, or pass "
                    "--insecure if the network is trusted");
    }
    if (!c.auth_token_file.empty()) {
      // About the token: it is what must not cross the network in plaintext.
      const bool token_in_file = sources.FromFile("auth_token_file") != nullptr;
      return absl::FailedPreconditionError(absl::StrCat(
          token_in_file ? absl::StrCat(Subject(sources, "auth_token_file"), " ") : "",
          "refusing to accept a bearer token in plaintext on ", address->host_port,
          ": it would cross the network readable by anyone on the way; add ",
          token_in_file ? "tls-cert and tls-key" : "--tls-cert and --tls-key"));
    }
  }
  if (c.metrics_listen.empty()) return absl::OkStatus();
  const bool in_file = sources.FromFile("metrics_listen") != nullptr;
  const std::string named =
      in_file ? absl::StrCat(Subject(sources, "metrics_listen"), " ", c.metrics_listen)
              : absl::StrCat("--metrics-listen=", c.metrics_listen);
  // Not host:port: said so here, as the address parser's advice (unix:/path or host:port)
  // is for --listen.
  if (IsUnixTarget(c.metrics_listen) || !absl::StrContains(c.metrics_listen, ':')) {
    return absl::InvalidArgumentError(absl::StrCat(
        named, ": give host:port (e.g. 127.0.0.1:9464); Prometheus scrapes over TCP"));
  }
  absl::StatusOr<bool> loopback = listen::ListensOnLoopbackOnly(c.metrics_listen);
  if (!loopback.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(named, ": ", loopback.status().message()));
  }
  if (!*loopback && !c.metrics_public && !c.insecure) {
    return absl::FailedPreconditionError(absl::StrCat(
        named, " is not a loopback address, and the metrics name functions: listen on "
        "127.0.0.1 behind a scraper on the same host, or ",
        in_file ? "set metrics-public: true" : "pass --metrics-public",
        " if every host that can reach it may read them"));
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
  for (const std::string& m : preload_module) args.push_back(absl::StrCat("--preload-module=", m));
  if (worker_memory_mb > 0) args.push_back(absl::StrCat("--memory-limit-mb=", worker_memory_mb));
  // A worker in a direct session writes its functions' log() lines to the server's log itself.
  if (log_format != "text") args.push_back(absl::StrCat("--log-format=", log_format));
  if (log_level != "info") args.push_back(absl::StrCat("--log-level=", log_level));
  return args;
}

// The counts, sizes and durations the flags hold now (the file's and the command line's).
void ReadCounts(ServerConfig& c) {
  c.workers = absl::GetFlag(FLAGS_workers);
  c.grpc_threads = absl::GetFlag(FLAGS_grpc_threads);
  c.max_queue = absl::GetFlag(FLAGS_max_queue);
  c.max_calls_per_worker = absl::GetFlag(FLAGS_max_calls_per_worker);
  c.worker_memory_mb = absl::GetFlag(FLAGS_worker_memory_mb);
  c.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  c.spare_session_workers = absl::GetFlag(FLAGS_spare_session_workers);
  c.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  c.drain_delay = absl::GetFlag(FLAGS_drain_delay);
  c.max_connections_per_peer = absl::GetFlag(FLAGS_max_connections_per_peer);
  c.first_call_timeout = absl::GetFlag(FLAGS_first_call_timeout);
  c.max_connection_idle = absl::GetFlag(FLAGS_max_connection_idle);
  c.call_timeout = absl::GetFlag(FLAGS_call_timeout);
  c.worker_start_timeout = absl::GetFlag(FLAGS_worker_start_timeout);
  c.max_docs_per_call = absl::GetFlag(FLAGS_max_docs_per_call);
  c.max_call_bytes = absl::GetFlag(FLAGS_max_call_bytes);
  c.max_grpc_memory = absl::GetFlag(FLAGS_max_grpc_memory);
  c.max_session_design_memory = absl::GetFlag(FLAGS_max_session_design_memory);
  c.max_waiting_uploads = absl::GetFlag(FLAGS_max_waiting_uploads);
  c.max_yaml_bytes = absl::GetFlag(FLAGS_max_yaml_bytes);
  c.max_yaml_nodes = absl::GetFlag(FLAGS_max_yaml_nodes);
  c.max_design_bytes = absl::GetFlag(FLAGS_max_design_bytes);
  c.max_couchdb_response_bytes = absl::GetFlag(FLAGS_max_couchdb_response_bytes);
  c.log_max_bytes = absl::GetFlag(FLAGS_log_max_bytes);
}

// Each of those within its own range. Run on the file's values before the command line
// overrides any (a wrong value in the file was never seen when a flag replaced it) and again on
// the values in force.
absl::Status CheckRanges(const Sources& sources, const ServerConfig& c) {
  // A negative count once fell back to a default or switched a feature off without a word.
  for (const absl::Status& s : {
           CheckProcessCount(sources, "workers", c.workers, "one per CPU core"),
           CheckBetween(sources, "grpc_threads", c.grpc_threads, 0, kMaxGrpcThreads,
                        "CPU cores, at most 4"),
           CheckAtLeast(sources, "max_queue", c.max_queue, 0, "no call waits"),
           CheckAtLeast(sources, "max_calls_per_worker", c.max_calls_per_worker, 0, "never"),
           CheckProcessCount(sources, "max_sessions", c.max_sessions, "no direct sessions"),
           CheckAtLeast(sources, "spare_session_workers", c.spare_session_workers, 0, "none"),
           CheckNotNegative(sources, "shutdown_grace", c.shutdown_grace,
                            "calls in flight are not waited for"),
           CheckNotNegative(sources, "drain_delay", c.drain_delay, "no drain"),
           CheckAtLeast(sources, "max_connections_per_peer", c.max_connections_per_peer, 0,
                        "no limit"),
           CheckNotNegative(sources, "first_call_timeout", c.first_call_timeout, "never"),
           CheckNotNegative(sources, "max_connection_idle", c.max_connection_idle, "never"),
           CheckAtLeast(sources, "max_docs_per_call", c.max_docs_per_call, 1, ""),
           CheckBetween(sources, "max_waiting_uploads", c.max_waiting_uploads, 0,
                        kMaxWaitingUploads, "no upload waits"),
           CheckAtLeast(sources, "max_yaml_bytes", c.max_yaml_bytes, 1, ""),
           CheckAtLeast(sources, "max_yaml_nodes", c.max_yaml_nodes, 1, ""),
           CheckAtLeast(sources, "max_design_bytes", c.max_design_bytes, 1, ""),
           CheckAtLeast(sources, "max_session_design_memory", c.max_session_design_memory, 1,
                        ""),
           CheckAtLeast(sources, "max_couchdb_response_bytes", c.max_couchdb_response_bytes, 1,
                        ""),
           CheckAtLeast(sources, "log_max_bytes", c.log_max_bytes, 0, "never"),
           CheckAtLeast(sources, "max_grpc_memory", c.max_grpc_memory, 0,
                        "the larger of 256 MiB and 4 x max-call-bytes"),
       }) {
    if (!s.ok()) return s;
  }
  // Spares wait for direct sessions, at most max_sessions of which run: more were started
  // without a word (1,000 asked, 64 started, 1.5 GiB held).
  // With no direct sessions (max_sessions 0) the default spare is not started; one asked for
  // would be ignored without a word.
  const bool spares_asked = sources.on_command_line.count("spare_session_workers") > 0 ||
                            sources.in_file.count("spare_session_workers") > 0;
  if ((c.max_sessions > 0 || spares_asked) && c.spare_session_workers > c.max_sessions) {
    const bool in_file = sources.FromFile("spare_session_workers") != nullptr;
    return OutOfRange(sources, "spare_session_workers",
                      absl::StrCat("between 0 (none) and ",
                                   Mention(sources, "max_sessions", in_file), " (",
                                   c.max_sessions, ")"),
                      absl::StrCat(c.spare_session_workers));
  }
  if (c.call_timeout <= absl::ZeroDuration()) {
    return OutOfRange(sources, "call_timeout", "longer than 0s",
                      absl::FormatDuration(c.call_timeout));
  }
  if (absl::Status s = CheckNotOverlong(sources, "call_timeout", c.call_timeout); !s.ok()) {
    return s;
  }
  if (c.worker_start_timeout <= absl::ZeroDuration()) {
    return OutOfRange(sources, "worker_start_timeout", "longer than 0s",
                      absl::FormatDuration(c.worker_start_timeout));
  }
  if (absl::Status s = CheckNotOverlong(sources, "worker_start_timeout", c.worker_start_timeout);
      !s.ok()) {
    return s;
  }
  // In MiB; the pool counts bytes in an int64_t. Below the smallest a worker holds more than
  // its cap as it starts (an idle one about 17 MiB), and was replaced every 2 s for ever.
  constexpr int64_t kLargestWorkerMemoryMb = std::numeric_limits<int64_t>::max() >> 20;
  constexpr int64_t kSmallestWorkerMemoryMb = 64;
  if (c.worker_memory_mb < 0 ||
      (c.worker_memory_mb > 0 && c.worker_memory_mb < kSmallestWorkerMemoryMb) ||
      c.worker_memory_mb > kLargestWorkerMemoryMb) {
    return OutOfRange(sources, "worker_memory_mb",
                      absl::StrCat("0 (no cap), or between ", kSmallestWorkerMemoryMb, " and ",
                                   kLargestWorkerMemoryMb),
                      absl::StrCat(c.worker_memory_mb));
  }
  // A call's request goes to a worker in one frame, with the task's own fields around it: a
  // request the server accepts must fit (gRPC's own limit, an int, is higher).
  if (c.max_call_bytes <= 0 || c.max_call_bytes > kLargestMaxCallBytes) {
    return OutOfRange(sources, "max_call_bytes",
                      absl::StrCat("between 1 and ", kLargestMaxCallBytes,
                                   " (a worker's frame holds at most ", kMaxFrameBytes,
                                   " bytes, with room kept for the task around the request)"),
                      absl::StrCat(c.max_call_bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<ServerConfig> LoadServerConfig(int argc, char** argv) {
  // absl's --help lists only flags defined in a file named like the program's main; ours are
  // defined here, so --help would say "No flags matched".
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = DefinedHere;
  usage.contains_helpshort_flags = usage.contains_help_flags;
  // absl's own --version says only the program's name and how it was built.
  usage.version_string = [] { return absl::StrCat("cnp-server ", kCnpVersion, "\n"); };
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "runs named Python functions for CouchDB (Map, Reduce, Validate, design "
      "functions, Upload) over gRPC, in a supervised pool of embedded-Python workers.\n\n"
      "  cnp-server --python-path=/srv/views --allow-module=myviews\n\n"
      "SIGHUP reloads every worker (rolling: the functions' Python code), reopens "
      "--access-log and reads the TLS files and --auth-token-file again; it does not read the "
      "--config file again: a changed setting takes a restart. SIGTERM stops gracefully.");
  if (HelpAsked(argc, argv)) {
    const std::string help =
        FlagHelp(absl::StrCat("cnp-server: ", absl::ProgramUsageMessage()), DefinedHere);
    std::fputs(help.c_str(), stdout);
    std::exit(0);
  }
  // Before the config file is read: the version is no setting.
  if (VersionAsked(argc, argv)) {
    std::fputs(usage.version_string().c_str(), stdout);
    std::exit(0);
  }
  Sources sources;
  absl::StatusOr<SplitCommandLine> split = SplitArgs(argc, argv, sources);
  if (!split.ok()) return split.status();
  std::vector<char*> args = split->ArgvForAbsl();
  std::map<std::string, std::vector<std::string>>& repeated = sources.repeated;

  // The config file comes first so that the command line overrides it.
  if (!sources.config_file.empty()) {
    if (absl::Status s = ApplyConfigFile(sources.config_file, sources); !s.ok()) return s;
    // The flags hold the file's values and the defaults now: each is checked as the file's,
    // the command line's overriding flags not read yet.
    Sources file_alone = sources;
    file_alone.on_command_line.clear();
    ServerConfig from_file;
    ReadCounts(from_file);
    if (absl::Status s = CheckRanges(file_alone, from_file); !s.ok()) return s;
  }
  if (absl::Status s = CheckCommandLineFlags(split->others); !s.ok()) return s;
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (positional.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unexpected argument '", positional[1], "'; every setting is a --flag (see --help)"));
  }

  ServerConfig c;
  c.listen = repeated.count("listen") ? repeated["listen"] : absl::GetFlag(FLAGS_listen);
  if (c.listen.empty()) c.listen.push_back(cnp::DefaultTarget());
  c.python_path = repeated.count("python_path") ? repeated["python_path"] : absl::GetFlag(FLAGS_python_path);
  c.allow_module = repeated.count("allow_module") ? repeated["allow_module"] : absl::GetFlag(FLAGS_allow_module);
  c.preload_module = repeated.count("preload_module") ? repeated["preload_module"] : absl::GetFlag(FLAGS_preload_module);
  if (absl::Status s = CheckModuleNames(sources, "allow_module", c.allow_module); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckModuleNames(sources, "preload_module", c.preload_module); !s.ok()) {
    return s;
  }
  ReadCounts(c);
  if (absl::Status s = CheckRanges(sources, c); !s.ok()) return s;
  // Room for a few of the largest calls at once, each received while another is answered.
  if (c.max_grpc_memory == 0) c.max_grpc_memory = std::max(int64_t{256} << 20, 4 * c.max_call_bytes);
  if (c.max_grpc_memory < 2 * c.max_call_bytes) {
    // Two settings: the message is about the memory bound (the one to raise), at its line.
    const bool in_file = sources.FromFile("max_grpc_memory") != nullptr;
    return OutOfRange(sources, "max_grpc_memory",
                      absl::StrCat("at least twice ", Mention(sources, "max_call_bytes", in_file),
                                   " (", 2 * c.max_call_bytes,
                                   "): gRPC holds a call's request and its answer at once"),
                      absl::StrCat(c.max_grpc_memory));
  }
  c.log_level = absl::GetFlag(FLAGS_log_level);
  if (LogLevel level; !ParseLogLevel(c.log_level, level)) {
    return absl::InvalidArgumentError(absl::StrCat(
        Subject(sources, "log_level"), " must be debug, info, warning or error; got '",
        Printable(c.log_level), "'"));
  }
  c.log_format = absl::GetFlag(FLAGS_log_format);
  if (LogFormat format; !ParseLogFormat(c.log_format, format)) {
    return absl::InvalidArgumentError(absl::StrCat(
        Subject(sources, "log_format"), " must be text or json; got '", Printable(c.log_format),
        "'"));
  }
  c.requested_workers = c.workers;
  if (c.workers == 0) {
    c.workers = static_cast<int>(std::clamp<unsigned>(std::thread::hardware_concurrency(), 1u,
                                                      kMaxWorkerProcesses));
  }
  if (c.grpc_threads == 0) {
    c.grpc_threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 4u));
  }
  c.worker_binary = absl::GetFlag(FLAGS_worker_binary);
  const bool default_worker_binary = c.worker_binary.empty();
  if (default_worker_binary) c.worker_binary = DefaultWorkerBinary();
  const bool worker_binary_in_file = sources.FromFile("worker_binary") != nullptr;
  if (::access(c.worker_binary.c_str(), X_OK) != 0) {
    if (worker_binary_in_file) {
      return absl::NotFoundError(absl::StrCat(
          Subject(sources, "worker_binary"), " ", c.worker_binary,
          " is missing or not executable; give the path of cnp-worker"));
    }
    return absl::NotFoundError(absl::StrCat("the worker binary ", c.worker_binary,
                                            " is missing or not executable; set --worker-binary"));
  }
  // The workers run as this server's user: whoever may replace the program runs as it.
  if (absl::Status s = CheckTrustedFile(
          c.worker_binary,
          default_worker_binary    ? "the worker binary next to cnp-server"
          : worker_binary_in_file ? "the worker binary"
                                  : "the worker binary (--worker-binary)",
          "replace the program this server runs as its workers");
      !s.ok()) {
    if (!worker_binary_in_file) return s;
    return absl::Status(s.code(),
                        absl::StrCat(Subject(sources, "worker_binary"), " ", s.message()));
  }
  c.virtualenv = absl::GetFlag(FLAGS_virtualenv);
  c.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  c.ready_fd = absl::GetFlag(FLAGS_ready_fd);
  if (absl::Status s = CheckReadyFd(c.ready_fd); !s.ok()) return s;
  c.launch_lock_fd = absl::GetFlag(FLAGS_launch_lock_fd);
  if (absl::Status s = CheckLaunchLockFd(c.launch_lock_fd); !s.ok()) return s;
  c.couchdb_allow = repeated.count("couchdb_allow") ? repeated["couchdb_allow"]
                                                    : absl::GetFlag(FLAGS_couchdb_allow);
  // Each URL alone first, so that a refusal names the element the operator wrote.
  for (size_t i = 0; i < c.couchdb_allow.size(); ++i) {
    if (absl::StatusOr<upload::CouchAllowList> one =
            upload::CouchAllowList::FromPrefixes({c.couchdb_allow[i]});
        !one.ok()) {
      return Reattribute(sources, "couchdb_allow", i, one.status(), c.couchdb_allow[i]);
    }
  }
  if (absl::StatusOr<upload::CouchAllowList> allow =
          upload::CouchAllowList::FromPrefixes(c.couchdb_allow);
      !allow.ok()) {
    return allow.status();
  }
  if (absl::Status s = CheckUnixListenPaths(c, sources); !s.ok()) return s;
  if (absl::Status s = CheckEachAddressOnce(c, sources); !s.ok()) return s;
  c.adapter_settings = absl::GetFlag(FLAGS_adapter_settings);
  c.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  c.tls_key = absl::GetFlag(FLAGS_tls_key);
  c.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  c.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  c.insecure = absl::GetFlag(FLAGS_insecure);
  c.metrics_public = absl::GetFlag(FLAGS_metrics_public);
  c.reflection = absl::GetFlag(FLAGS_reflection);
  c.access_log = absl::GetFlag(FLAGS_access_log);
  if (c.tls_cert.empty() != c.tls_key.empty()) {
    // About the one that was given: the other is missing.
    const char* given = c.tls_cert.empty() ? "tls_key" : "tls_cert";
    const char* missing = c.tls_cert.empty() ? "tls-cert" : "tls-key";
    if (sources.FromFile(given) != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          Subject(sources, given), " needs ", missing, " too; give both or neither"));
    }
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together; give both or neither");
  }
  if (!c.tls_client_ca.empty() && c.tls_cert.empty()) {
    if (sources.FromFile("tls_client_ca") != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          Subject(sources, "tls_client_ca"),
          " needs tls-cert and tls-key: client certificates are checked only over TLS"));
    }
    return absl::InvalidArgumentError(
        "--tls-client-ca needs --tls-cert and --tls-key: client certificates are checked only "
        "over TLS");
  }
  if (absl::Status s = CheckPlaintextListeners(c, sources); !s.ok()) return s;
  // Read here, like every other file a setting names, so that a missing or unsafe token file is
  // a bad setting (exit 2, its line in the config file), not a failure to listen (exit 1) after
  // the workers started. The RPC server reads it again when it starts listening.
  if (!c.auth_token_file.empty()) {
    if (absl::StatusOr<std::vector<std::string>> token = ReadAuthTokens(c.auth_token_file);
        !token.ok()) {
      const absl::Status named(token.status().code(),
                               absl::StrCat("--auth-token-file: ", token.status().message()));
      return Reattribute(sources, "auth_token_file", -1, named);
    }
  }
  // The TLS files likewise: a missing certificate or a key others may read is the setting's
  // mistake. (That gRPC takes what they hold is known only when it listens.)
  if (!c.tls_cert.empty()) {
    absl::StatusOr<std::string> cert =
        ReadPemFile("tls-cert", c.tls_cert, PemFileWriters::kRootOrThisUser);
    if (!cert.ok()) return Reattribute(sources, "tls_cert", -1, cert.status());
    absl::StatusOr<std::string> key = ReadSecretFile(c.tls_key, "the private key (--tls-key)");
    if (!key.ok()) return Reattribute(sources, "tls_key", -1, key.status());
  }
  if (!c.tls_client_ca.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPemFile("tls-client-ca", c.tls_client_ca, PemFileWriters::kRootOrThisUser);
    if (!ca.ok()) return Reattribute(sources, "tls_client_ca", -1, ca.status());
  }
  if (std::string group = absl::GetFlag(FLAGS_socket_group); !group.empty()) {
    absl::StatusOr<int> gid = ResolveGroup(group);
    if (!gid.ok()) return Reattribute(sources, "socket_group", -1, gid.status(), group);
    c.socket_gid = *gid;
  }
  const std::vector<std::string> allowed_users =
      repeated.count("allow_uid") ? repeated["allow_uid"] : absl::GetFlag(FLAGS_allow_uid);
  for (size_t i = 0; i < allowed_users.size(); ++i) {
    absl::StatusOr<uid_t> uid = ResolveUser(allowed_users[i], "allow-uid");
    if (!uid.ok()) return Reattribute(sources, "allow_uid", i, uid.status(), allowed_users[i]);
    c.allow_uid.push_back(*uid);
  }
  // Every directory the workers load code from: whoever may write to one runs code as this
  // server. The workers check again (and the directories a virtualenv's .pth files add). The
  // settings' own directories one by one first, so that a refusal names the file's line.
  for (size_t i = 0; i < c.python_path.size(); ++i) {
    if (absl::Status s = CheckCodeDirectories(CodeDirectories({c.python_path[i]}, nullptr, ""));
        !s.ok()) {
      return Reattribute(sources, "python_path", i, s, c.python_path[i]);
    }
  }
  if (!c.virtualenv.empty()) {
    if (absl::Status s = CheckCodeDirectories(CodeDirectories({}, nullptr, c.virtualenv));
        !s.ok()) {
      return Reattribute(sources, "virtualenv", -1, s, c.virtualenv);
    }
    // Every virtualenv has one: a directory without it (a project's, the venv's parent) was
    // found only by the first worker, which exited, and the server told to check --python-path.
    std::error_code error;
    if (!std::filesystem::is_regular_file(c.virtualenv + "/pyvenv.cfg", error)) {
      return Reattribute(
          sources, "virtualenv", -1,
          absl::InvalidArgumentError(absl::StrCat(
              "--virtualenv ", c.virtualenv, " is not a virtualenv: it has no pyvenv.cfg (make "
              "one with python3 -m venv DIR, and give DIR)")),
          c.virtualenv);
    }
  }
  if (absl::Status s = CheckCodeDirectories(
          CodeDirectories(c.python_path, std::getenv("PYTHONPATH"), c.virtualenv));
      !s.ok()) {
    return s;
  }
  c.sources = std::make_shared<const Sources>(std::move(sources));
  return c;
}

absl::Status ServerConfig::Attributed(absl::string_view setting, int item,
                                      const absl::Status& status) const {
  return sources == nullptr ? status : Reattribute(*sources, setting, item, status);
}

}  // namespace cnp::config
