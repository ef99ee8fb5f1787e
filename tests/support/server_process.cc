#include "tests/support/server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace cnp::testing {

std::string Runfile(const std::string& path) {
  // Tests get TEST_SRCDIR; `bazel run` gets RUNFILES_DIR; otherwise the binary's own tree.
  for (const char* name : {"TEST_SRCDIR", "RUNFILES_DIR"}) {
    if (const char* dir = std::getenv(name); dir != nullptr && *dir != '\0') {
      return absl::StrCat(dir, "/cnp/", path);
    }
  }
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  return absl::StrCat(std::string(self, n > 0 ? n : 0), ".runfiles/cnp/", path);
}

std::string MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", prefix, "XXXXXX");
  char* made = ::mkdtemp(pattern.data());
  return made != nullptr ? std::string(made) : std::string();
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(std::vector<std::string> args) {
  auto server = std::unique_ptr<ServerProcess>(new ServerProcess);
  std::string dir = MakeTempDir("server");
  // Unix socket paths are limited to 107 bytes, which Bazel's TEST_TMPDIR already nears.
  char socket_dir[] = "/tmp/cnp-test-XXXXXX";
  server->target_ = absl::StrCat("unix:", ::mkdtemp(socket_dir), "/cnp.sock");
  server->log_path_ = dir + "/server.log";
  constexpr int kReadyFd = 5;
  args.insert(args.begin(), {Runfile("service/cnp-server"), "--listen=" + server->target_,
                             "--worker-binary=" + Runfile("service/worker/cnp-worker"),
                             absl::StrCat("--ready-fd=", kReadyFd)});
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string runfiles = absl::StrCat("RUNFILES_DIR=", Runfile(""));
  runfiles.resize(runfiles.size() - 5);  // without the trailing "/cnp/"
  int log = ::open(server->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return absl::InternalError("pipe");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(log, STDERR_FILENO);
    if (ready[1] != kReadyFd) ::dup2(ready[1], kReadyFd);
    ::fcntl(kReadyFd, F_SETFD, 0);  // keep it across exec
    ::putenv(runfiles.data());
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log);
  ::close(ready[1]);
  server->pid_ = pid;
  // The server writes "ready" once it listens; end of file first means it gave up.
  char buffer[16];
  ssize_t n;
  while ((n = ::read(ready[0], buffer, sizeof buffer)) < 0 && errno == EINTR) {
  }
  ::close(ready[0]);
  if (n <= 0) {
    return absl::UnavailableError(absl::StrCat("cnp-server did not come up: ", server->Log()));
  }
  return server;
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
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exited_ = true;
  return status;
}

std::string ServerProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

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
