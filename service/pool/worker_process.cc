#include "service/pool/worker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "service/worker/protocol/server_gone_signal.h"

namespace cnp::pool {

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return absl::StrCat("killed by signal ", sig, " (", strsignal(sig), ")");
  }
  return absl::StrCat("ended with wait status ", status);
}

absl::StatusOr<SpawnedWorker> SpawnWorkerChild(const WorkerCommand& command) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return absl::UnavailableError(absl::StrCat("socketpair: ", std::strerror(errno)));
  }
  int output[2];
  if (::pipe2(output, O_CLOEXEC) != 0) {
    const int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return absl::UnavailableError(absl::StrCat("pipe: ", std::strerror(err)));
  }
  // Everything the child needs is prepared before fork: between fork and exec a multi-threaded
  // parent's child may only make async-signal-safe calls.
  std::vector<std::string> storage;
  storage.reserve(command.args.size() + 2);
  storage.push_back(command.binary);
  for (const std::string& a : command.args) storage.push_back(a);
  storage.push_back("--log-fd=4");
  std::vector<char*> argv;
  for (std::string& s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    for (int fd : {fds[0], fds[1], output[0], output[1]}) ::close(fd);
    return absl::UnavailableError(absl::StrCat("fork: ", std::strerror(err)));
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // A process group of its own: a terminal's Ctrl-C (and Ctrl-\) reaches every process of
    // the foreground job, and timeout(1) or `kill -- -PGID` signal a whole group, while workers
    // are the server's to stop (SIGKILL, or the end of their socket), after the calls it waits
    // for while it drains. Ignoring those signals instead would be inherited by every process a
    // function starts (Python's subprocess restores only SIGPIPE and SIGXFSZ), which could then
    // not be terminated.
    ::setpgid(0, 0);
    for (int sig : {SIGHUP, SIGPIPE, SIGINT, SIGQUIT, SIGTERM, worker::kServerGoneSignal}) {
      ::signal(sig, SIG_DFL);
    }
    // A worker must not outlive the server that feeds it, nor must what its functions started
    // (server_gone_signal.h). After the signal's default action is restored: one the server
    // ignored would be ignored here too.
    ::prctl(PR_SET_PDEATHSIG, worker::kServerGoneSignal);
    if (::getppid() != parent) ::_exit(127);
    // The socket on 3, the log (the server's stderr) on 4, the output pipe on 1 and 2. Each is
    // first copied above them, so that none is overwritten before it is moved (dup2 clears
    // close-on-exec on the copies it makes). A server without a stderr logs the worker's lines
    // through the relay too.
    const int socket = ::fcntl(fds[1], F_DUPFD, 10);
    const int pipe_end = ::fcntl(output[1], F_DUPFD, 10);
    int log = ::fcntl(STDERR_FILENO, F_DUPFD, 10);
    if (log < 0) log = pipe_end;
    if (socket < 0 || pipe_end < 0 || ::dup2(socket, 3) < 0 || ::dup2(log, 4) < 0 ||
        ::dup2(pipe_end, STDOUT_FILENO) < 0 || ::dup2(pipe_end, STDERR_FILENO) < 0) {
      ::_exit(127);
    }
    ::close_range(5, ~0U, 0);
    ::execv(argv[0], argv.data());
    const char msg[] = "cnp-server: cannot execute the worker binary\n";
    (void)!::write(4, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(fds[1]);
  ::close(output[1]);
  ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  return SpawnedWorker{.pid = pid, .fd = fds[0], .output = output[0]};
}

}  // namespace cnp::pool
