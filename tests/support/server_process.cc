#include "tests/support/server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/support/spawn.h"

namespace cnp::testing {

std::unique_ptr<ServerProcess> ServerProcess::Launch(ServerOptions options) {
  auto server = std::unique_ptr<ServerProcess>(new ServerProcess);
  server->log_path_ = MakeTempDir("server") + "/server.log";
  constexpr int kReadyFd = 5;
  std::vector<std::string> args = {
      options.server_binary.empty() ? Runfile("service/cnp-server") : options.server_binary,
      "--worker-binary=" + (options.worker_binary.empty() ? Runfile("service/worker/cnp-worker")
                                                          : options.worker_binary),
      absl::StrCat("--ready-fd=", kReadyFd)};
  if (options.fresh_socket) {
    // Unix socket paths are limited to 107 bytes, which Bazel's TEST_TMPDIR already nears.
    server->target_ = absl::StrCat("unix:", ShortTempDir(), "/cnp.sock");
    args.push_back("--listen=" + server->target_);
  }
  args.insert(args.end(), std::make_move_iterator(options.args.begin()),
              std::make_move_iterator(options.args.end()));
  const int log =
      ::open(server->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int ready[2];
  // A server that could not even be spawned counts as one that exited 127, as in a shell.
  server->exited_ = true;
  server->status_ = 127 << 8;
  if (::pipe2(ready, O_CLOEXEC) != 0) {
    ::close(log);
    return server;
  }
  absl::StatusOr<pid_t> pid = Spawn({.argv = std::move(args),
                                     .env = {"RUNFILES_DIR=" + RunfilesDir()},
                                     .fds = {{STDERR_FILENO, log}, {kReadyFd, ready[1]}},
                                     .work_dir = options.work_dir,
                                     .umask = options.umask,
                                     .open_files = options.open_files,
                                     .own_process_group = options.own_process_group});
  ::close(log);
  ::close(ready[1]);
  if (!pid.ok()) {
    ::close(ready[0]);
    return server;
  }
  server->pid_ = *pid;
  server->exited_ = false;
  // The server writes "ready" once it listens; end of file first means it gave up.
  char buffer[16];
  ssize_t n;
  while ((n = ::read(ready[0], buffer, sizeof buffer)) < 0 && errno == EINTR) {
  }
  ::close(ready[0]);
  server->ready_ = n > 0;
  return server;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(std::vector<std::string> args) {
  return Start(std::move(args), "", "");
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    std::vector<std::string> args, const std::string& server_binary,
    const std::string& worker_binary) {
  std::unique_ptr<ServerProcess> server = Launch({.args = std::move(args),
                                                  .server_binary = server_binary,
                                                  .worker_binary = worker_binary});
  if (server->pid_ < 0) return absl::InternalError("cnp-server could not be started");
  if (!server->ready_) {
    return absl::UnavailableError(absl::StrCat("cnp-server did not come up: ", server->Log()));
  }
  return server;
}

std::unique_ptr<ServerProcess> ServerProcess::StartWithFunctions(
    const std::vector<std::string>& function_dirs, int workers,
    const std::vector<std::string>& extra) {
  std::vector<std::string> args;
  for (const std::string& dir : function_dirs) {
    args.push_back("--python-path=" + (dir.starts_with('/') ? dir : Runfile(dir)));
  }
  if (workers > 0) args.push_back(absl::StrCat("--workers=", workers));
  args.insert(args.end(), extra.begin(), extra.end());
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = Start(std::move(args));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

ServerProcess::~ServerProcess() {
  if (!exited_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    WaitForExit();
  }
}

std::unique_ptr<client::Client> ServerProcess::Connect() const {
  auto client = client::Client::Connect(target_, absl::Seconds(10));
  return client.ok() ? std::move(*client) : nullptr;
}

void ServerProcess::Signal(int sig) const { ::kill(pid_, sig); }

int ServerProcess::WaitForExit() {
  if (!exited_) status_ = ::cnp::testing::WaitForExit(pid_);
  exited_ = true;
  return status_;
}

int ServerProcess::ExitCode() { return ::cnp::testing::ExitCode(WaitForExit()); }

int ServerProcess::Port(int n) const {
  const std::string log = Log();
  size_t at = 0;
  for (int i = 0; i <= n; ++i) {
    at = log.find("(port ", at);
    if (at == std::string::npos) return 0;
    at += 6;
  }
  int port = 0;
  return absl::SimpleAtoi(log.substr(at, log.find(')', at) - at), &port) ? port : 0;
}

std::string ServerProcess::Log() const { return ReadFile(log_path_); }

}  // namespace cnp::testing

namespace cnp::testing {

bool ServerProcess::WaitForLog(const std::string& needle, absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  int watch = ::inotify_init1(IN_CLOEXEC);
  ::inotify_add_watch(watch, log_path_.c_str(), IN_MODIFY);
  bool found = false;
  // Watch first, then read: a line written in between still wakes the poll.
  while (!(found = absl::StrContains(Log(), needle))) {
    int left = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd fd{watch, POLLIN, 0};
    if (left <= 0 || ::poll(&fd, 1, left) <= 0) break;
    char events[4096];
    (void)!::read(watch, events, sizeof events);
  }
  ::close(watch);
  return found || absl::StrContains(Log(), needle);
}

}  // namespace cnp::testing
