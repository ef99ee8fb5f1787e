// cnp-adapter: the query-server process CouchDB starts (COUCHDB_QUERY_SERVER_PYTHON).
//
// With a cnp-server on this host (a unix target) it hands CouchDB's pipes to the server, whose
// worker then serves CouchDB directly (adapter/direct_session.h), and waits for that session to
// end. Otherwise - a remote target, a server at its --max-sessions cap, an older server - it
// frames CouchDB's lines, answers "reset" itself, and forwards everything else over one Session
// stream to cnp-server, where the protocol is implemented (service/couchdb/query_protocol.h).
//
// CouchDB splits the command on spaces without shell quoting, so every flag works as a single
// --flag=value token.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "adapter/direct_session.h"
#include "adapter/service_connection.h"
#include "adapter/session_state.h"
#include "client/lib/channel_target.h"
#include "common/command_line_flags.h"
#include "common/code_directories.h"
#include "common/couchdb/line_io.h"
#include "common/default_target.h"
#include "common/flag_help.h"
#include "common/grpc_client_log.h"
#include "common/list_flags.h"
#include "common/module_name.h"
#include "common/printable_text.h"
#include "common/process_limits.h"
#include "common/socket_directory.h"
#include "common/socket_trust.h"
#include "common/system_user.h"
#include "common/unix_target.h"
#include "common/version.h"
#include "service/common/absl_view.h"
#include "service/couchdb/error_id.h"
#include "service/couchdb/json_text.h"
#include "service/session/direct_socket_path.h"
#include "service/session/launch_settings.h"

ABSL_FLAG(std::string, target, "",
          "cnp-server to use, e.g. unix:/run/cnp/cnp.sock or 10.0.0.5:7070; replicas as a list "
          "(10.0.0.5:7070,10.0.0.6:7070) or dns:///NAME:PORT, each session on one of them, "
          "round robin, replayed on another if its replica goes away. Default: $CNP_TARGET or the "
          "host's unix socket, where the adapter starts a cnp-server if none answers.");
ABSL_FLAG(std::string, server_binary, "",
          "cnp-server to start when none answers at the default target, an absolute path. "
          "Default: next to this executable, or ../service/cnp-server.");
ABSL_FLAG(std::vector<std::string>, python_path, {},
          "Comma-separated absolute directories for the Python path of a cnp-server this "
          "adapter starts (repeatable: the values add up). A relative one is refused, as is a "
          "relative PYTHONPATH entry: the server runs in /, and CouchDB starts the adapter in a "
          "directory of its own.");
ABSL_FLAG(std::vector<std::string>, allow_module, {},
          "Comma-separated module prefixes whose functions a cnp-server this adapter starts may "
          "call (repeatable: the values add up).");
ABSL_FLAG(std::vector<std::string>, preload_module, {},
          "Comma-separated modules each worker of a cnp-server this adapter starts imports as it "
          "starts (repeatable): for a module whose import takes longer than CouchDB's "
          "os_process_timeout.");
ABSL_FLAG(absl::Duration, call_timeout, cnp::session::kAdapterCallTimeout,
          "Longest any command may run on a cnp-server this adapter starts (its --call-timeout). "
          "Longer than CouchDB's os_process_timeout, so that CouchDB's timeout is the one that "
          "ends a command; raise it with an os_process_timeout above it.");
ABSL_FLAG(int, workers, 0,
          "Worker processes of a cnp-server this adapter starts (0: its default); at most 256, "
          "as cnp-server allows.");
ABSL_FLAG(int64_t, max_line_bytes, cnp::couchdb::kDefaultMaxLineBytes,
          "Longest line accepted from CouchDB, in bytes, on either session path (at most "
          "268369920, what one gRPC message to cnp-server may carry). A longer line is answered "
          "with [\"error\",\"too_large\",...] and skipped.");
ABSL_FLAG(std::string, session, "auto",
          "direct: hand CouchDB's pipes to a worker of a cnp-server on this host (fail if it "
          "cannot); stream: forward every line over the gRPC Session stream; auto: direct when "
          "the server offers it, else stream");
ABSL_FLAG(bool, tls, false,
          "TLS to a --target on TCP, trusting the system's CAs (implied by --tls-ca, --tls-cert).");
ABSL_FLAG(bool, insecure, false,
          "Plaintext to a --target on TCP beyond loopback, refused otherwise: for a network you "
          "trust. A bearer token is still never sent in plaintext off this host.");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM file of the CAs that signed the service's TLS certificate (TCP targets).");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate, for a service that requires one (mutual TLS); with --tls-key.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert (mode 0600, owned by this user).");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding the bearer token the service requires (mode as for --tls-key); re-read on every "
          "reconnect.");
ABSL_FLAG(std::string, server_user, "",
          "The user (name or uid) a cnp-server on a unix --target runs as, when it is neither "
          "this user nor root, e.g. cnp for the systemd units: the socket, its directory and "
          "the direct-session server may then belong to that user. Anyone else's are refused, "
          "and the default directory /tmp/cnp-<uid> must always be this user's.");
ABSL_FLAG(bool, stats, false,
          "At exit, print to stderr how many commands were forwarded and the mean time spent "
          "waiting for the service (for benchmarks: the rest of a round trip is the adapter). "
          "Stream path only: a direct session forwards nothing.");

namespace cnp::adapter {
namespace {

constexpr int kStdin = 0;
constexpr int kStdout = 1;

// The most --max-line-bytes may be: a line travels to cnp-server in one gRPC message, which it
// accepts up to 256 MiB; this leaves room for the message's own framing.
constexpr size_t kMaxLineBytesLimit = (size_t{256} << 20) - (size_t{64} << 10);

// A line over --max-line-bytes was read to its end and dropped (`dropped`, LineReader's
// RESOURCE_EXHAUSTED; `start`, its first bytes): CouchDB gets an error in its own shape instead,
// and the stream stays framed. False when the adapter must exit.
bool AnswerLineTooLong(const absl::Status& dropped, std::string_view start) {
  const std::string message = absl::StrCat("cnp-adapter: ", dropped.message(),
                                           " (cnp-adapter --max-line-bytes raises the limit)");
  // A list's row went missing; as when the service is gone, CouchDB must start over. Its first
  // bytes are enough to tell (the worker's direct session asks its protocol instead). Said on
  // stderr as the direct path says it.
  const bool list_row = IsListStep(couchdb::PeekCommand(start));
  std::cerr << message << (list_row ? couchdb::kListRowLost : "") << std::endl;
  std::string out = couchdb::ErrorLine("too_large", message);
  out += '\n';
  if (!couchdb::WriteAll(kStdout, out).ok()) return false;
  return !list_row;
}

// How long the adapter waits for the server to take CouchDB's pipes (it may have to start a
// worker), and to replace a server with other settings: within CouchDB's default 5 s timeout
// for the first command.
constexpr absl::Duration kDirectStartWait = absl::Milliseconds(4500);
// The least of that wait an offer is made with: a server answers one in milliseconds, unless
// it has to start a session worker (up to the wait the hello gives it).
constexpr absl::Duration kLeastOfferWait = absl::Milliseconds(500);

constexpr int kUseStream = -1;

// Whether the adapter may start (and replace) a server at `target`, the default it fell back
// to. The host's default socket, yes. A unix $CNP_TARGET only where the adapter's user could
// have made the place itself (its directory missing or ours, as for a private test or script
// server); in another user's directory it names an operator's server, as --target would, whose
// directory --server-user may vouch for: treating it as ours refused it whatever that flag said.
bool MayLaunchAt(const std::string& target) {
  const absl::StatusOr<std::string> path = UnixSocketPath(target);
  if (!path.ok()) return false;
  const char* from_environment = std::getenv("CNP_TARGET");
  if (from_environment == nullptr || *from_environment == '\0') return true;
  struct stat st {};
  if (::lstat(SocketDirectory(*path).c_str(), &st) != 0) return true;
  return st.st_uid == ::geteuid();
}

// An unknown flag, or a value absl would refuse, is a usage error (exit 2, with the flag it
// probably meant or what to write), as in cnp-server; absl's own message exits 1, which reads
// to CouchDB's operator like a crash. `others` is argv
// for absl, names in its spelling; a flag's value given apart (--workers -1) is not a flag.
// absl's own flags (--flagfile, --fromenv, --undefok...) count as unknown: --help does not list
// them, and --undefok=target let a misspelt flag pass silently.
std::optional<std::string> FlagUsageError(const std::vector<std::string>& others) {
  const auto is_ours = [](const absl::CommandLineFlag& flag) {
    return absl::StrContains(flag.Filename(), "adapter/");
  };
  const absl::Status judged =
      JudgeCommandLineFlags(others, is_ours, [&](const WrittenFlag& written) {
    // A value absl would refuse is a usage error too (--call-timeout=abc, --workers=lots), as
    // in cnp-server. (An empty --target is refused after parsing, saying so.)
    if (written.flag != nullptr) return CheckFlagValue(written, /*refuses_empty=*/false);
    std::vector<std::string> ours;
    for (const auto& [flag_name, flag] : absl::GetAllFlags()) {
      if (is_ours(*flag)) ours.emplace_back(flag_name);
    }
    return UnknownFlagError(written.name, ours, "cnp-adapter");
  });
  if (judged.ok()) return std::nullopt;
  return std::string(judged.message());
}

// The server this adapter starts runs in / (a daemon), and CouchDB starts the adapter in a
// directory of its own (/opt/couchdb): a relative path checked here would name another
// directory there, and the server failed "--python-path examples is not a directory" while
// CouchDB got `unavailable` (found by a review). Refused rather than made absolute against
// CouchDB's directory, which no operator means.
absl::Status CheckAbsolutePaths(const std::vector<CodeDirectory>& dirs,
                                const std::string& server_binary) {
  for (const CodeDirectory& dir : dirs) {
    if (absl::StartsWith(dir.path, "/")) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        dir.source == CodeSource::kPythonPathVariable
            ? absl::StrCat("PYTHONPATH entry ", dir.path)
            : absl::StrCat(dir.Setting(), "=", dir.path),
        " is relative: the cnp-server this adapter starts runs in /, and CouchDB starts the "
        "adapter in a directory of its own; give an absolute path, e.g. /srv/views"));
  }
  if (!server_binary.empty() && !absl::StartsWith(server_binary, "/")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--server-binary=", server_binary,
                     " is relative: CouchDB starts the adapter in a directory of its own; give "
                     "an absolute path, e.g. /usr/local/bin/cnp-server"));
  }
  return absl::OkStatus();
}

// An adapter that may start a server (the default target) checks the --server-binary it was
// given now, not where the server is started: a path that cannot run was met at every command's
// start, each answered `unavailable`, with "exec of cnp-server failed" in its log. One that never
// starts a server (a --target) does not look at the flag.
absl::Status CheckServerBinaryRuns(const std::string& server_binary) {
  if (!server_binary.empty()) {
    struct stat st {};
    std::string problem;
    if (::stat(server_binary.c_str(), &st) != 0) {
      problem = std::strerror(errno);
    } else if (!S_ISREG(st.st_mode)) {
      problem = S_ISDIR(st.st_mode) ? "it is a directory" : "it is not a file";
    } else if (::access(server_binary.c_str(), X_OK) != 0) {
      problem = absl::StrCat("it cannot be executed (", std::strerror(errno), ")");
    }
    if (!problem.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--server-binary=", server_binary, ": ", problem,
          "; give the path of cnp-server, e.g. /usr/local/bin/cnp-server"));
    }
  }
  return absl::OkStatus();
}

// An operator's server keeps its own settings: said to CouchDB's log once per difference
// (the server says when).
void ReportOperatorsSettings(const DirectOffer& offer, const ServiceConnection::Options& options,
                             const std::string& settings) {
  if (!offer.report_settings_mismatch) return;
  std::cerr << "cnp-adapter: the cnp-server at " << options.target
            << " was started by the operator; it keeps its own settings, not this adapter's ("
            << settings << ")" << std::endl;
}

// An adapter-started server whose settings differ from this adapter's `settings` is replaced
// by one started with them, said to CouchDB's log.
absl::Status ReplaceForSettings(const std::string& grpc_path,
                                const ServiceConnection::Options& options,
                                const DirectOffer& offer, const std::string& settings,
                                absl::Time deadline) {
  std::cerr << "cnp-adapter: the cnp-server an adapter started (pid " << offer.server_pid
            << ") runs with other settings (" << offer.server_settings << "); replacing it with "
            << settings << std::endl;
  return ReplaceService(grpc_path, options.launch, offer.server_pid, deadline);
}

// The direct session, if the server takes it: returns the adapter's exit code, or kUseStream
// when CouchDB's pipes are still this process's to serve over the stream.
int RunDirect(const ServiceConnection::Options& options, bool required) {
  // Called for a unix target only, which ChannelTargetUri has read as one path.
  const std::string grpc_path = UnixSocketPath(options.target).value();
  const std::string socket_path = session::DirectSocketPath(grpc_path);
  const std::string settings = options.may_launch ? LaunchSettings(options.launch) : "";
  const absl::Time deadline = absl::Now() + kDirectStartWait;
  auto fail = [](absl::string_view why) {
    std::cerr << "cnp-adapter: " << why << std::endl;
    return 1;
  };
  const SocketTrust trust = SocketTrust::WithServerUid(options.server_uid);
  // CouchDB's pipes must never go to a socket someone else could have put there.
  if (absl::Status s = CheckTargetSocket(options); !s.ok()) {
    if (required) return fail(s.message());
    return kUseStream;  // the stream path refuses it too, and tells CouchDB
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (options.may_launch && !UnixSocketAccepts(grpc_path)) {
      if (absl::Status s = EnsureServiceRunning(grpc_path, options.launch, deadline); !s.ok()) {
        if (required) return fail(s.message());
        return kUseStream;  // the stream path reports it to CouchDB as an error line
      }
    }
    // A start that took nearly all of the wait (the launch lock, slow imports) leaves the
    // server too little time to answer an offer: a late answer is an error (the server may
    // own the pipes by then), where the stream still serves with the pipes untouched (a review).
    if (!required && deadline - absl::Now() < kLeastOfferWait) return kUseStream;
    absl::StatusOr<DirectOffer> offer = OfferDirectSession(
        socket_path, settings, absl::GetFlag(FLAGS_max_line_bytes), trust, deadline);
    // The server's state is unknown (it may own the pipes): never read stdin after this.
    if (!offer.ok()) return fail(offer.status().message());
    ReportOperatorsSettings(*offer, options, settings);
    switch (offer->outcome) {
      case DirectOffer::Outcome::kAccepted: {
        SessionEnd end = WaitForSessionEnd(offer->socket);
        if (end.pipes_untouched && !required) return kUseStream;
        return end.exit_code;
      }
      case DirectOffer::Outcome::kNoSocket:
        if (required) {
          return fail(absl::StrCat("no direct-session socket at ", socket_path,
                                   " (an older cnp-server, or none)"));
        }
        return kUseStream;
      case DirectOffer::Outcome::kUseStream:
      case DirectOffer::Outcome::kSettingsAgree:  // (an answer to a settings_only hello only)
        if (required) return fail(absl::StrCat("no direct session: ", offer->reason));
        return kUseStream;
      case DirectOffer::Outcome::kRefused:
        return fail(absl::StrCat("cnp-server refused this adapter: ", offer->reason));
      case DirectOffer::Outcome::kSettingsDiffer:
        if (absl::Status s = ReplaceForSettings(grpc_path, options, *offer, settings, deadline);
            !s.ok()) {
          return fail(s.message());
        }
        break;  // offer again, to the new server
    }
  }
  return fail("the cnp-server kept other settings after it was replaced");
}

// The stream path (--session=stream) with a server this adapter may start: one an adapter
// started with other settings is replaced, as the direct path does, so that this adapter's
// --allow-module and --python-path hold (the stream used whatever server it found, without a
// word; a review). An exit code when the adapter cannot go on; else the stream goes on, and
// says itself what is wrong, if anything is.
std::optional<int> ReplaceServerOfOtherSettings(const ServiceConnection::Options& options) {
  if (!options.may_launch) return std::nullopt;
  absl::StatusOr<std::string> grpc_path = UnixSocketPath(options.target);
  // Nothing there yet: the stream starts a server, with this adapter's settings.
  if (!grpc_path.ok() || !UnixSocketAccepts(*grpc_path)) return std::nullopt;
  if (!CheckTargetSocket(options).ok()) return std::nullopt;  // the stream refuses it too
  const std::string settings = LaunchSettings(options.launch);
  const absl::Time deadline = absl::Now() + kDirectStartWait;
  absl::StatusOr<DirectOffer> asked =
      AskServerSettings(session::DirectSocketPath(*grpc_path), settings,
                        SocketTrust::WithServerUid(options.server_uid), deadline);
  if (!asked.ok()) return std::nullopt;
  ReportOperatorsSettings(*asked, options, settings);
  if (asked->outcome != DirectOffer::Outcome::kSettingsDiffer) return std::nullopt;
  if (absl::Status s = ReplaceForSettings(*grpc_path, options, *asked, settings, deadline);
      !s.ok()) {
    std::cerr << "cnp-adapter: " << s.message() << std::endl;
    return 1;
  }
  return std::nullopt;
}

int Run() {
  const int64_t max_line_bytes = absl::GetFlag(FLAGS_max_line_bytes);
  if (max_line_bytes < 1 || static_cast<uint64_t>(max_line_bytes) > kMaxLineBytesLimit) {
    std::cerr << "cnp-adapter: --max-line-bytes must be between 1 and " << kMaxLineBytesLimit
              << std::endl;
    return 2;
  }
  ServiceConnection::Options options;
  options.target = absl::GetFlag(FLAGS_target);
  if (options.target.empty()) {
    options.target = DefaultTarget();
    options.may_launch = MayLaunchAt(options.target);
  }
  if (absl::StatusOr<std::string> uri = client::ChannelTargetUri(options.target); !uri.ok()) {
    std::cerr << "cnp-adapter: " << uri.status().message() << std::endl;
    return 2;
  }
  options.security = {.tls = absl::GetFlag(FLAGS_tls),
                      .tls_ca_file = absl::GetFlag(FLAGS_tls_ca),
                      .tls_cert_file = absl::GetFlag(FLAGS_tls_cert),
                      .tls_key_file = absl::GetFlag(FLAGS_tls_key),
                      .auth_token_file = absl::GetFlag(FLAGS_auth_token_file),
                      .insecure = absl::GetFlag(FLAGS_insecure)};
  if (absl::Status s = client::CheckTlsTarget(options.security, options.target); !s.ok()) {
    std::cerr << "cnp-adapter: " << s.message() << std::endl;
    return 2;
  }
  // Refused before anything is read from CouchDB or sent anywhere.
  if (!options.security.auth_token_file.empty()) {
    if (absl::Status s = client::CheckSecretStaysPrivate(options.security, options.target,
                                                         client::kBearerToken);
        !s.ok()) {
      std::cerr << "cnp-adapter: " << s.message() << std::endl;
      return 2;
    }
  }
  // Read once here as well as on every connection: a --tls-cert without its key, or a token
  // file others may read, stays wrong, and found only at the first connection it made the
  // adapter answer `true` to reset and `unavailable` to every command, exiting 0.
  if (absl::StatusOr<client::LoadedChannelSecurity> loaded =
          client::LoadChannelSecurity(options.security, options.target);
      !loaded.ok()) {
    std::cerr << "cnp-adapter: " << loaded.status().message() << std::endl;
    return 2;
  }
  if (const std::string user = absl::GetFlag(FLAGS_server_user); !user.empty()) {
    absl::StatusOr<uid_t> uid = ResolveUser(user, "server-user");
    if (!uid.ok()) {
      std::cerr << "cnp-adapter: " << uid.status().message() << std::endl;
      return 2;
    }
    options.server_uid = *uid;
  }
  options.launch.server_binary = absl::GetFlag(FLAGS_server_binary);
  options.launch.python_paths = absl::GetFlag(FLAGS_python_path);
  options.launch.allowed_modules = absl::GetFlag(FLAGS_allow_module);
  options.launch.preload_modules = absl::GetFlag(FLAGS_preload_module);
  options.launch.workers = absl::GetFlag(FLAGS_workers);
  options.launch.call_timeout = absl::GetFlag(FLAGS_call_timeout);
  // Checked only where the adapter may start a server: settings it ignores (an operator moved to
  // a --target and left the old --python-path behind) must not keep CouchDB from its query
  // server, exit 2 on every start, on a host without that directory (an operator probe).
  if (options.may_launch) {
    // Checked here, before a running server with other settings is replaced by one that could
    // not start: a typo must not leave the host without a query server.
    // The server it starts inherits this environment, PYTHONPATH included, and would refuse a
    // directory other users may write to, as its workers do.
    const std::vector<CodeDirectory> code_directories = CodeDirectories(
        options.launch.python_paths, std::getenv("PYTHONPATH"), /*virtualenv=*/"");
    for (const absl::Status& s :
         {CheckAbsolutePaths(code_directories, options.launch.server_binary),
          CheckServerBinaryRuns(options.launch.server_binary),
          CheckCodeDirectories(code_directories)}) {
      if (!s.ok()) {
        std::cerr << "cnp-adapter: " << s.message() << std::endl;
        return 2;
      }
    }
    for (const auto& [flag, modules] :
         {std::pair{"allow-module", &options.launch.allowed_modules},
          std::pair{"preload-module", &options.launch.preload_modules}}) {
      for (const std::string& module : *modules) {
        const std::string why = WhyNotAModuleName(module);
        if (why.empty()) continue;
        std::cerr << "cnp-adapter: --" << flag << "=" << Printable(module) << ": " << why
                  << std::endl;
        return 2;
      }
    }
    // cnp-server's own bounds, checked here so that the server it would start cannot fail.
    if (options.launch.call_timeout <= absl::ZeroDuration() ||
        options.launch.call_timeout > session::kLongestCallTimeout) {
      std::cerr << "cnp-adapter: --call-timeout must be longer than 0s and at most "
                << absl::FormatDuration(session::kLongestCallTimeout) << " (a year); got "
                << absl::FormatDuration(options.launch.call_timeout) << std::endl;
      return 2;
    }
    // cnp-server's own ceiling, checked here so that the server it would start cannot fail.
    if (options.launch.workers < 0 || options.launch.workers > kMaxWorkerProcesses) {
      std::cerr << "cnp-adapter: --workers must be between 0 (the server's default, one per CPU "
                   "core) and " << kMaxWorkerProcesses << "; got " << options.launch.workers
                << std::endl;
      return 2;
    }
  } else {
    // Settings for a server this adapter starts, given where it starts none: said, since they
    // read as if they applied; --allow-module given here and silently not applied is a
    // security setting lost.
    std::vector<std::string> unused;
    if (!options.launch.server_binary.empty()) unused.push_back("--server-binary");
    if (!options.launch.python_paths.empty()) unused.push_back("--python-path");
    if (!options.launch.allowed_modules.empty()) unused.push_back("--allow-module");
    if (!options.launch.preload_modules.empty()) unused.push_back("--preload-module");
    if (options.launch.workers != 0) unused.push_back("--workers");
    if (options.launch.call_timeout != session::kAdapterCallTimeout) {
      unused.push_back("--call-timeout");
    }
    if (!unused.empty()) {
      const bool from_flag = !absl::GetFlag(FLAGS_target).empty();
      // Without --target, CNP_TARGET named it: a TCP address, or a socket in another user's
      // directory (MayLaunchAt).
      const char* why = from_flag || !IsUnixTarget(options.target)
                            ? ""
                            : " (its socket directory is another user's)";
      std::cerr << "cnp-adapter: WARNING: " << absl::StrJoin(unused, ", ")
                << (unused.size() == 1 ? " configures" : " configure")
                << " the cnp-server this adapter starts, and it starts none for "
                << (from_flag ? "--target=" : "CNP_TARGET=") << options.target << why
                << (unused.size() == 1 ? ": it is ignored; give it"
                                       : ": they are ignored; give them")
                << " to that server (cnp-server's flags or config file)" << std::endl;
    }
  }

  const std::string mode = absl::GetFlag(FLAGS_session);
  if (mode != "auto" && mode != "direct" && mode != "stream") {
    std::cerr << "cnp-adapter: --session must be auto, direct or stream" << std::endl;
    return 2;
  }
  if (mode == "stream") {
    if (std::optional<int> code = ReplaceServerOfOtherSettings(options)) return *code;
  } else {
    if (UnixSocketPath(options.target).ok()) {
      if (int code = RunDirect(options, mode == "direct"); code != kUseStream) return code;
    } else if (mode == "direct") {
      std::cerr << "cnp-adapter: --session=direct needs a unix target on this host, not "
                << options.target << std::endl;
      return 1;
    }
  }

  // A line the service sends ahead of an answer (a function's log line, as couchjs writes each
  // at once) goes to CouchDB at once: CouchDB restarts its read timeout on it. A failed write
  // is found by the answer's.
  options.write_early = [](const v1::SessionOutput& early) {
    std::string lines;
    for (const std::string& line : early.lines()) absl::StrAppend(&lines, line, "\n");
    couchdb::WriteAll(kStdout, lines).IgnoreError();
  };
  SessionState state;
  ServiceConnection service(options, state);
  const bool stats = absl::GetFlag(FLAGS_stats);
  int64_t forwarded = 0;
  absl::Duration in_service;
  couchdb::LineReader reader(kStdin, static_cast<size_t>(max_line_bytes));
  std::string out;
  for (;;) {
    absl::StatusOr<std::optional<std::string_view>> next = reader.Next();
    if (absl::IsResourceExhausted(next.status())) {
      if (!AnswerLineTooLong(next.status(), reader.dropped_start())) return 1;
      continue;
    }
    if (!next.ok()) {
      std::cerr << "cnp-adapter: " << next.status().message() << std::endl;
      return 1;
    }
    if (!next->has_value()) break;  // CouchDB closed stdin: the normal end
    const std::string_view line = **next;
    const couchdb::CommandKind command = couchdb::PeekCommand(line);
    if (command == couchdb::CommandKind::kReset &&
        std::holds_alternative<couchdb::command::Reset>(couchdb::ParseCommand(line))) {
      // Answered at once: CouchDB sends a reset with every checkout of this process. (One that
      // is not JSON goes on as any such line, which ends the process as in couchjs.)
      if (!couchdb::WriteAll(kStdout, "true\n").ok()) return 1;
      state.OnReset(line);
      service.Send(line);
      continue;
    }

    const absl::Time sent = stats ? absl::Now() : absl::InfinitePast();
    absl::StatusOr<const v1::SessionOutput*> reply =
        service.Call(line, /*retry=*/!IsListStep(command));
    if (stats) {
      in_service += absl::Now() - sent;
      ++forwarded;
    }
    out.clear();
    if (!reply.ok()) {
      std::cerr << "cnp-adapter: " << reply.status().message() << std::endl;
      // The server's mapping: a line the service refused as too large (its mark) is not a
      // service that is down, nor one overloaded for a moment.
      out = couchdb::ErrorLine(couchdb::InfrastructureErrorId(reply.status()),
                               StdView(reply.status().message()));
      out += '\n';
      if (!couchdb::WriteAll(kStdout, out).ok()) return 1;
      // A list's rows cannot be replayed to another worker: CouchDB must start over.
      if (IsListStep(command)) return 1;
      continue;
    }
    for (const std::string& reply_line : (*reply)->lines()) {
      out += reply_line;
      out += '\n';
    }
    if (!couchdb::WriteAll(kStdout, out).ok()) return 1;
    if (ReplyTaughtSession(command, **reply)) state.OnAccepted(command, line);
    if ((*reply)->exit()) {
      // Where couchjs exits: CouchDB's log shows only the exit status, so the reason goes to
      // stderr, in the words a direct session's end uses.
      if ((*reply)->lines_size() > 0) {
        std::cerr << "cnp-adapter: "
                  << couchdb::ProtocolEndedReason((*reply)->lines((*reply)->lines_size() - 1))
                  << std::endl;
      }
      return 1;
    }
  }
  if (stats && forwarded > 0) {
    std::cerr << "cnp-adapter stats: forwarded=" << forwarded
              << " mean_service_us=" << absl::ToDoubleMicroseconds(in_service / forwarded)
              << std::endl;
  }
  return 0;
}

// absl keeps only the last value of a repeated flag, where cnp-server adds them up: an adapter
// that dropped a directory would start a server that cannot find the functions.
const ListFlag kListFlags[] = {
    {.name = "python_path"},
    {.name = "allow_module",
     .without_it = "without it every module on the Python path may run"},
    {.name = "preload_module"},
};

}  // namespace
}  // namespace cnp::adapter

int main(int argc, char** argv) {
  // With gRPC's default poller a blocking Read may be completed by one of gRPC's own threads
  // and handed over: an extra wake-up per document. With "poll" the calling thread polls its
  // own call (measured: 3 -> 2 context switches per map_doc). An explicit setting still wins.
  ::setenv("GRPC_POLL_STRATEGY", "poll", /*overwrite=*/0);
  // And while the adapter waits for CouchDB no thread polls at all but gRPC's backup poller:
  // at its default 5 s the answers to the stream's keepalive pings (service_connection.cc) were
  // read too late, and every quiet session lost its stream. Two wake-ups a second instead.
  ::setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "500", /*overwrite=*/0);
  // Its stderr is CouchDB's log: gRPC's lines there are each said once a minute at most.
  cnp::RouteGrpcLogToStderr("cnp-adapter");
  absl::SetProgramUsageMessage(
      "CouchDB query server for named Python functions: "
      "COUCHDB_QUERY_SERVER_PYTHON=\"/usr/local/bin/cnp-adapter --target=unix:/run/cnp/cnp.sock "
      "--server-user=cnp\"");
  if (cnp::HelpAsked(argc, argv)) {
    const std::string help =
        cnp::FlagHelp(absl::StrCat("cnp-adapter: ", absl::ProgramUsageMessage()),
                      [](absl::string_view file) { return absl::StrContains(file, "adapter/"); });
    std::fputs(help.c_str(), stdout);
    return 0;
  }
  if (cnp::VersionAsked(argc, argv)) {
    std::printf("cnp-adapter %s\n", std::string(cnp::kCnpVersion).c_str());
    return 0;
  }
  absl::StatusOr<cnp::SplitCommandLine> split =
      cnp::TakeListFlags(argc, argv, cnp::adapter::kListFlags);
  if (!split.ok()) {
    std::cerr << "cnp-adapter: " << split.status().message() << std::endl;
    return 2;
  }
  if (std::optional<std::string> unknown = cnp::adapter::FlagUsageError(split->others)) {
    std::cerr << "cnp-adapter: " << *unknown << std::endl;
    return 2;
  }
  std::vector<char*> absl_argv = split->ArgvForAbsl();
  const std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(absl_argv.size()), absl_argv.data());
  if (positional.size() > 1) {
    std::cerr << "cnp-adapter: unexpected argument \"" << positional[1]
              << "\": every setting is a --flag=value (see --help)" << std::endl;
    return 2;
  }
  // An empty --target (an unset variable in CouchDB's configuration) must not quietly mean the
  // host's default socket, where the adapter would even start a server of its own.
  if (split->named.count("target") != 0 && absl::GetFlag(FLAGS_target).empty()) {
    std::cerr << "cnp-adapter: --target was given no value; give it one, or leave it out for "
                 "$CNP_TARGET or the host's socket (see --help)" << std::endl;
    return 2;
  }
  absl::SetFlag(&FLAGS_python_path, split->lists["python_path"]);
  absl::SetFlag(&FLAGS_allow_module, split->lists["allow_module"]);
  absl::SetFlag(&FLAGS_preload_module, split->lists["preload_module"]);
  // CouchDB closing its end must end the adapter with an error, not a signal.
  ::signal(SIGPIPE, SIG_IGN);
  // gRPC locks absl mutexes on every message; Debian's abseil checks each lock for deadlock
  // cycles, which costs measurable CPU per document here and finds nothing in this one thread.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return cnp::adapter::Run();
}
