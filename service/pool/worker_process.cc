#include "service/pool/worker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"
#include "service/common/framing.h"

namespace cnp::pool {

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return absl::StrCat("killed by signal ", sig, " (", strsignal(sig), ")");
  }
  return absl::StrCat("ended with wait status ", status);
}

absl::StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::Spawn(const WorkerCommand& command,
                                                                    int id) {
  absl::StatusOr<SpawnedWorker> child = SpawnWorkerChild(command);
  if (!child.ok()) return child.status();
  return std::unique_ptr<WorkerProcess>(new WorkerProcess(id, child->pid, child->fd));
}

absl::StatusOr<SpawnedWorker> SpawnWorkerChild(const WorkerCommand& command) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return absl::UnavailableError(absl::StrCat("socketpair: ", std::strerror(errno)));
  }
  // Everything the child needs is prepared before fork: between fork and exec a multi-threaded
  // parent's child may only make async-signal-safe calls.
  std::vector<std::string> storage;
  storage.reserve(command.args.size() + 1);
  storage.push_back(command.binary);
  for (const std::string& a : command.args) storage.push_back(a);
  std::vector<char*> argv;
  for (std::string& s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return absl::UnavailableError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    // A worker must not outlive the server that feeds it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGHUP, SIGTERM, SIGINT, SIGPIPE}) ::signal(sig, SIG_DFL);
    if (::dup2(fds[1], 3) < 0) ::_exit(127);
    ::close_range(4, ~0U, 0);
    ::execv(argv[0], argv.data());
    const char msg[] = "cnp-server: cannot execute the worker binary\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(fds[1]);
  ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  return SpawnedWorker{pid, fds[0]};
}

WorkerProcess::~WorkerProcess() {
  if (!reaped_) Kill();
  ::close(fd_);
}

absl::Status WorkerProcess::Send(const worker::v1::Task& task, absl::Time deadline) {
  out_.clear();
  if (!task.SerializeToString(&out_)) return absl::InternalError("cannot serialize the task");
  return WriteFrame(fd_, out_, deadline);
}

absl::Status WorkerProcess::SendWithDescriptors(const worker::v1::Task& task,
                                                const std::vector<int>& fds, absl::Time deadline) {
  out_.clear();
  if (!task.SerializeToString(&out_)) return absl::InternalError("cannot serialize the task");
  return WriteFrameWithDescriptors(fd_, out_, fds, deadline);
}

absl::StatusOr<worker::v1::Reply> WorkerProcess::Receive(absl::Time deadline) {
  if (absl::Status s = ReadFrame(fd_, frame_, deadline); !s.ok()) return s;
  worker::v1::Reply reply;
  if (!reply.ParseFromString(frame_)) {
    return absl::DataLossError(absl::StrCat("worker ", id_, " (pid ", pid_, ") sent a malformed reply"));
  }
  return reply;
}

absl::StatusOr<worker::v1::Reply> WorkerProcess::Exchange(const worker::v1::Task& task,
                                                          absl::Time deadline) {
  if (absl::Status s = Send(task, deadline); !s.ok()) return s;
  return Receive(deadline);
}

std::string WorkerProcess::Reap(bool block) {
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      wait_status_ = status;
      return DescribeWaitStatus(status);
    }
    if (r == 0) return "";  // still running
    if (errno == EINTR) continue;
    reaped_ = true;  // ECHILD: someone else reaped it
    return "ended (status unknown)";
  }
}

std::string WorkerProcess::Kill() {
  if (reaped_) return "already ended";
  ::kill(pid_, SIGKILL);
  return Reap(/*block=*/true);
}

std::string WorkerProcess::ReapAfterFailure() {
  if (reaped_) return "already ended";
  // The socket closed: the process is exiting or has exited. Wait briefly for it to finish
  // dying so the log can say how it ended (a pidfd becomes readable when it has), then make sure.
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  if (pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    while (::poll(&p, 1, 200) < 0 && errno == EINTR) {
    }
    ::close(pidfd);
  }
  std::string how = Reap(/*block=*/false);
  if (!how.empty()) return how;
  return Kill() + " after it stopped answering";
}

asio::awaitable<std::string> WorkerProcess::AwaitEndAfterFailure() {
  using asio::experimental::awaitable_operators::operator||;
  if (reaped_) co_return "already ended";
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  if (pidfd < 0) co_return ReapAfterFailure();
  const auto executor = co_await asio::this_coro::executor;
  asio::posix::stream_descriptor ended(executor, pidfd);
  asio::steady_timer grace(executor, std::chrono::milliseconds(200));
  // A crashing process closes its socket a moment before it can be reaped: give it that moment
  // so the log can say how it ended.
  co_await (ended.async_wait(asio::posix::stream_descriptor::wait_read, asio::use_awaitable) ||
            grace.async_wait(asio::use_awaitable));
  if (std::string how = Reap(/*block=*/false); !how.empty()) co_return how;
  ::kill(pid_, SIGKILL);
  asio::error_code ec;
  co_await ended.async_wait(asio::posix::stream_descriptor::wait_read,
                            asio::redirect_error(asio::use_awaitable, ec));
  std::string how = Reap(/*block=*/false);
  if (how.empty()) how = Reap(/*block=*/true);
  co_return how + " after it stopped answering";
}

int64_t WorkerProcess::ResidentBytes() const {
  std::ifstream statm(absl::StrCat("/proc/", pid_, "/statm"));
  int64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * ::sysconf(_SC_PAGESIZE);
}

}  // namespace cnp::pool
