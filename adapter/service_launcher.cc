#include "adapter/service_launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/socket_directory.h"
#include "service/session/launch_settings.h"

namespace cnp::adapter {
namespace {

std::string ErrnoText() { return std::strerror(errno); }

// Closes a descriptor when it goes out of scope (and with it any flock held on it).
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// The socket's directory holds the lock and the log. It must be ours and private: anyone who
// could write there could put their own service in front of CouchDB.
absl::Status PrepareRuntimeDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ErrnoText()));
  }
  return CheckSocketDirectory(dir, DirectoryOwner::kMe);
}

// This environment without what a service manager gave CouchDB's own process: its notify
// socket and watchdog (the daemon would tell systemd that CouchDB is ready or stopping, which
// systemd refuses, a line in CouchDB's journal each time, or with NotifyAccess=all takes) and
// its passed sockets (CouchDB's, not ours).
std::vector<std::string> DaemonEnvironment() {
  static constexpr std::string_view kServiceManagers[] = {
      "NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=", "LISTEN_FDS=", "LISTEN_PID=",
      "LISTEN_FDNAMES="};
  std::vector<std::string> kept;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view variable(*entry);
    if (std::none_of(std::begin(kServiceManagers), std::end(kServiceManagers),
                     [&](std::string_view name) { return variable.starts_with(name); })) {
      kept.emplace_back(variable);
    }
  }
  return kept;
}

// Starts `argv` as a daemon: its own session, reparented to init, in DaemonEnvironment(),
// stdin from /dev/null, output appended to `log_path`, and `ready_fd` (the write end of a
// pipe) and `lock_fd` (the launch lock) kept open across exec for --ready-fd and
// --launch-lock-fd. Everything is prepared before fork(): the adapter may already run gRPC
// threads, so the children only make async-signal-safe calls before exec.
absl::Status SpawnDaemon(const std::vector<std::string>& argv, const std::string& log_path,
                         int ready_fd, int lock_fd) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const std::vector<std::string> environment = DaemonEnvironment();
  std::vector<char*> env;
  for (const std::string& variable : environment) {
    env.push_back(const_cast<char*>(variable.c_str()));
  }
  env.push_back(nullptr);
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) {
    return absl::PermissionDeniedError(absl::StrCat("cannot open ", log_path, ": ", ErrnoText()));
  }
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  static constexpr char kExecFailed[] = "cnp-adapter: exec of cnp-server failed\n";
  static constexpr char kForkFailed[] =
      "cnp-adapter: cannot start cnp-server: fork failed (too many processes?)\n";

  const pid_t child = ::fork();
  if (child < 0) {
    const std::string why = ErrnoText();  // before the closes change errno
    ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    return absl::ResourceExhaustedError(absl::StrCat("fork failed: ", why));
  }
  if (child == 0) {
    ::setsid();
    const pid_t daemon = ::fork();  // the daemon is the grandchild, adopted by init
    if (daemon < 0) {
      [[maybe_unused]] ssize_t ignored = ::write(log_fd, kForkFailed, sizeof(kForkFailed) - 1);
      ::_exit(1);
    }
    if (daemon > 0) ::_exit(0);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::fcntl(ready_fd, F_SETFD, 0);
    ::fcntl(lock_fd, F_SETFD, 0);
    ::signal(SIGPIPE, SIG_DFL);
    if (::chdir("/") != 0) ::_exit(126);
    ::execve(args[0], args.data(), env.data());
    [[maybe_unused]] ssize_t ignored = ::write(STDERR_FILENO, kExecFailed, sizeof(kExecFailed) - 1);
    ::_exit(127);
  }
  ::close(log_fd);
  if (null_fd >= 0) ::close(null_fd);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("could not start cnp-server (a fork failed); see ", log_path));
  }
  return absl::OkStatus();
}

// Why a server that exited while starting did, from what it wrote to `log_path` past
// `written_before` (the log's size when it was started: the file keeps every earlier server's
// lines, whose errors are not this one's): its last ERROR line ("no worker could start: ..."),
// else its last line (a refused setting is written without a level). CouchDB's log then has it
// without a trip to the file. Empty if there is nothing to read.
std::string WhyItExited(const std::string& log_path, off_t written_before) {
  constexpr off_t kTail = 4096;
  ScopedFd log(::open(log_path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat file;
  if (log.get() < 0 || ::fstat(log.get(), &file) != 0) return "";
  // Smaller than before: emptied meanwhile (rotated), and all of it is this server's.
  const off_t ours = file.st_size >= written_before ? written_before : 0;
  const off_t from = std::max(ours, file.st_size - kTail);
  std::string tail(static_cast<size_t>(file.st_size - from), '\0');
  const ssize_t n = ::pread(log.get(), tail.data(), tail.size(), from);
  tail.resize(n > 0 ? static_cast<size_t>(n) : 0);
  std::vector<absl::string_view> lines = absl::StrSplit(tail, '\n', absl::SkipEmpty());
  // A first line cut at its start is quoted only when it is the only one.
  if (from > ours && lines.size() > 1) lines.erase(lines.begin());
  for (auto line = lines.rbegin(); line != lines.rend(); ++line) {
    if (absl::StrContains(*line, " ERROR cnp-server[") ||
        absl::StrContains(*line, "\"level\":\"ERROR\"")) {
      return std::string(*line);
    }
  }
  return lines.empty() ? "" : std::string(lines.back());
}

// Waits for the service's "ready" line on the --ready-fd pipe (written once it listens). End
// of file first means it exited during start-up.
absl::Status WaitUntilReady(int ready_fd, absl::Time deadline, const std::string& log_path,
                            off_t log_written_before) {
  char buffer[16];
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    pollfd entry{.fd = ready_fd, .events = POLLIN, .revents = 0};
    const int polled = ::poll(&entry, 1, std::max<int64_t>(0, absl::ToInt64Milliseconds(left)));
    if (polled < 0 && errno == EINTR) continue;
    if (polled <= 0) {
      return absl::UnavailableError(
          absl::StrCat("started cnp-server, but it was not ready in time; see ", log_path));
    }
    const ssize_t n = ::read(ready_fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) return absl::OkStatus();
    // Not worth retrying at once: the same start-up would fail the same way.
    const std::string why = WhyItExited(log_path, log_written_before);
    return absl::FailedPreconditionError(absl::StrCat(
        "cnp-server exited while starting", why.empty() ? "" : absl::StrCat(" (", why, ")"),
        "; see ", log_path));
  }
}

}  // namespace

bool UnixSocketAccepts(const std::string& path) {
  sockaddr_un address{};
  if (path.size() >= sizeof(address.sun_path)) return false;
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  // Without blocking: a live service whose backlog is full would block connect() for long,
  // and then look dead. It counts as accepting (it is there, only busy).
  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return false;
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 ||
         errno == EAGAIN;
}

absl::StatusOr<std::string> FindServerBinary(const LaunchOptions& options) {
  if (!options.server_binary.empty()) return options.server_binary;
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) {
    return absl::NotFoundError(
        absl::StrCat("cannot read /proc/self/exe: ", error.message(), "; pass --server-binary"));
  }
  const std::filesystem::path dir = self.parent_path();
  for (const std::filesystem::path& candidate :
       {dir / "cnp-server", dir.parent_path() / "service" / "cnp-server"}) {
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return absl::NotFoundError(absl::StrCat("no cnp-server next to ", self.string(),
                                          " (nor in ../service); pass --server-binary"));
}

namespace {

// Takes the launch lock next to the socket (released when the returned descriptor closes, and
// by a server started under it only once it listens: --launch-lock-fd), waiting for it until
// `deadline`.
absl::StatusOr<int> TakeLaunchLock(const std::string& socket_path, absl::Time deadline) {
  const std::string dir = std::filesystem::path(socket_path).parent_path().string();
  if (absl::Status status = PrepareRuntimeDir(dir); !status.ok()) return status;
  const std::string lock_path = dir + "/cnp-server.lock";
  const int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0) {
    return absl::PermissionDeniedError(absl::StrCat("cannot open ", lock_path, ": ", ErrnoText()));
  }
  // flock() has no timeout: tried again every 10 ms. The holder is another adapter, or a server
  // one started that is still starting its workers.
  while (::flock(lock, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) {
      const std::string why = ErrnoText();  // before the close changes errno
      ::close(lock);
      return absl::UnavailableError(absl::StrCat("cannot lock ", lock_path, ": ", why));
    }
    if (absl::Now() >= deadline) {
      ::close(lock);
      return absl::UnavailableError(absl::StrCat(
          "cnp-server on ", socket_path, " is still being started (by another cnp-adapter, or "
          "starting its workers: it holds the launch lock until it listens) and was not ready "
          "in time; see ", dir, "/cnp-server.log"));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return lock;
}

// Starts cnp-server on `socket_path`; the caller holds the launch lock on `lock`, which the
// server holds too until it listens: an adapter that gives up waiting for a slow start leaves
// the others waiting for that server, not starting one each.
absl::Status StartLocked(const std::string& socket_path, const LaunchOptions& options,
                         int lock, absl::Time deadline) {
  const std::string dir = std::filesystem::path(socket_path).parent_path().string();
  const std::string log_path = dir + "/cnp-server.log";
  absl::StatusOr<std::string> binary = FindServerBinary(options);
  if (!binary.ok()) return binary.status();
  // A socket file left by a service that died is removed by the new service itself, which
  // first makes sure nothing listens on it any more.
  std::vector<std::string> argv = {*binary, absl::StrCat("--listen=unix:", socket_path)};
  for (const std::string& path : options.python_paths) {
    argv.push_back(absl::StrCat("--python-path=", path));
  }
  for (const std::string& prefix : options.allowed_modules) {
    argv.push_back(absl::StrCat("--allow-module=", prefix));
  }
  for (const std::string& module : options.preload_modules) {
    argv.push_back(absl::StrCat("--preload-module=", module));
  }
  if (options.workers > 0) argv.push_back(absl::StrCat("--workers=", options.workers));
  argv.push_back(absl::StrCat("--call-timeout=", absl::FormatDuration(options.call_timeout)));
  // Marks the server as the adapters' own, replaceable when their settings change. A short
  // drain: a replacing adapter waits for it, and stream sessions reconnect and replay anyway.
  argv.push_back(absl::StrCat("--adapter-settings=", LaunchSettings(options)));
  argv.push_back("--shutdown-grace=2s");

  const std::string started =
      absl::StrCat("cnp-adapter (pid ", ::getpid(), ") starting ", absl::StrJoin(argv, " "), "\n");
  off_t log_written_before = 0;  // what the log held before this server's lines
  if (ScopedFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
      log.get() >= 0) {
    [[maybe_unused]] ssize_t ignored = ::write(log.get(), started.data(), started.size());
    log_written_before = std::max<off_t>(0, ::lseek(log.get(), 0, SEEK_END));
  }
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) {
    return absl::ResourceExhaustedError(absl::StrCat("pipe failed: ", ErrnoText()));
  }
  ScopedFd ready_read(ready[0]);
  argv.push_back(absl::StrCat("--ready-fd=", ready[1]));
  argv.push_back(absl::StrCat("--launch-lock-fd=", lock));
  absl::Status spawned = SpawnDaemon(argv, log_path, ready[1], lock);
  ::close(ready[1]);  // only the daemon holds the write end now: its exit reads as end of file
  if (!spawned.ok()) return spawned;
  return WaitUntilReady(ready_read.get(), deadline, log_path, log_written_before);
}

// Waits until process `pid` (not our child) has exited, or `deadline`.
bool WaitForExit(pid_t pid, absl::Time deadline) {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return errno == ESRCH;
  ScopedFd closer(pidfd);
  for (;;) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) return false;
    pollfd entry{.fd = pidfd, .events = POLLIN, .revents = 0};
    const int polled = ::poll(&entry, 1, static_cast<int>(left));
    if (polled > 0) return true;
    if (polled < 0 && errno != EINTR) return false;
  }
}

}  // namespace

std::string LaunchSettings(const LaunchOptions& options) {
  return session::LaunchSettingsText(options.python_paths, options.allowed_modules,
                                     options.workers, options.preload_modules,
                                     options.call_timeout);
}

absl::Status EnsureServiceRunning(const std::string& socket_path, const LaunchOptions& options,
                                  absl::Time deadline) {
  absl::StatusOr<int> lock = TakeLaunchLock(socket_path, deadline);
  if (!lock.ok()) return lock.status();
  ScopedFd held(*lock);
  // Another adapter may have started it while this one waited for the lock.
  if (UnixSocketAccepts(socket_path)) return absl::OkStatus();
  return StartLocked(socket_path, options, *lock, deadline);
}

absl::Status ReplaceService(const std::string& socket_path, const LaunchOptions& options,
                            pid_t old_server, absl::Time deadline) {
  absl::StatusOr<int> lock = TakeLaunchLock(socket_path, deadline);
  if (!lock.ok()) return lock.status();
  ScopedFd held(*lock);
  // Another adapter with the same new settings may have replaced it while this one waited.
  if (::kill(old_server, 0) == 0) {
    const std::string log_path =
        std::filesystem::path(socket_path).parent_path().string() + "/cnp-server.log";
    if (ScopedFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
        log.get() >= 0) {
      const std::string line = absl::StrCat(
          "cnp-adapter (pid ", ::getpid(), ") replacing cnp-server (pid ", old_server,
          "): its settings differ from ", LaunchSettings(options), "\n");
      [[maybe_unused]] ssize_t ignored = ::write(log.get(), line.data(), line.size());
    }
    ::kill(old_server, SIGTERM);  // it drains (--shutdown-grace) and exits
    if (!WaitForExit(old_server, deadline)) {
      return absl::UnavailableError(absl::StrCat(
          "cnp-server (pid ", old_server, ") was started with other settings and is still "
          "draining; CouchDB's next query server will use its replacement"));
    }
  }
  if (UnixSocketAccepts(socket_path)) return absl::OkStatus();
  return StartLocked(socket_path, options, *lock, deadline);
}

}  // namespace cnp::adapter
