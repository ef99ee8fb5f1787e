#include "tests/support/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cnp::testing {

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::vector<std::string>& argv, const std::string& work_dir,
    const std::string& ready_text, absl::Duration timeout) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  std::unique_ptr<ChildProcess> child(new ChildProcess());
  absl::StatusOr<pid_t> pid = Spawn({.argv = argv,
                                     .fds = {{STDOUT_FILENO, out[1]}, {STDERR_FILENO, out[1]}},
                                     .work_dir = work_dir});
  ::close(out[1]);
  if (!pid.ok()) {
    ::close(out[0]);
    return pid.status();
  }
  child->pid_ = *pid;
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

std::optional<int> ChildProcess::WaitForExitCode(absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    auto ended = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return exited_; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&ended), timeout)) return std::nullopt;
  }
  // Its output ended when it exited (it starts no children that keep the pipe).
  const int status = WaitForExit(pid_);
  pid_ = -1;
  return ExitCode(status);
}

std::string ChildProcess::output() const {
  absl::MutexLock lock(&mu_);
  return output_;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    WaitForExit(pid_);
  }
  if (drainer_.joinable()) drainer_.join();
}

}  // namespace cnp::testing
