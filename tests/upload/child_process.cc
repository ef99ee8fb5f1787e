#include "tests/upload/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cnp::upload::testing {
namespace {

pid_t Spawn(const std::vector<std::string>& argv, const std::string& work_dir, int output_fd) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    if (output_fd >= 0) {
      ::dup2(output_fd, STDOUT_FILENO);
      ::dup2(output_fd, STDERR_FILENO);
    }
    if (::chdir(work_dir.c_str()) != 0) ::_exit(126);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

}  // namespace

std::string MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", prefix, ".XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) return "";
  return pattern;
}

int RunToCompletion(const std::vector<std::string>& argv, const std::string& work_dir) {
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  pid_t pid = Spawn(argv, work_dir, devnull);
  ::close(devnull);
  if (pid < 0) return -1;
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::vector<std::string>& argv, const std::string& work_dir,
    const std::string& ready_text, absl::Duration timeout) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  std::unique_ptr<ChildProcess> child(new ChildProcess());
  child->pid_ = Spawn(argv, work_dir, out[1]);
  ::close(out[1]);
  if (child->pid_ < 0) {
    ::close(out[0]);
    return absl::InternalError("fork failed");
  }
  child->drainer_ = std::thread([c = child.get(), fd = out[0]] { c->Drain(fd); });
  if (!child->WaitForOutput(ready_text, timeout)) {
    return absl::UnavailableError(
        absl::StrCat(argv[0], " did not start; it printed:\n", child->output()));
  }
  return child;
}

void ChildProcess::Drain(int fd) {
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    absl::MutexLock lock(&mu_);
    if (n <= 0) {
      exited_ = true;
      break;
    }
    output_.append(buffer, n);
  }
  ::close(fd);
}

bool ChildProcess::WaitForOutput(const std::string& text, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto seen = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return exited_ || absl::StrContains(output_, text);
  };
  mu_.AwaitWithTimeout(absl::Condition(&seen), timeout);
  return absl::StrContains(output_, text);
}

std::string ChildProcess::output() const {
  absl::MutexLock lock(&mu_);
  return output_;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status;
    ::waitpid(pid_, &status, 0);
  }
  if (drainer_.joinable()) drainer_.join();
}

}  // namespace cnp::upload::testing
