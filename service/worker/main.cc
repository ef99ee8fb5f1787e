// cnp-worker: runs named Python functions for cnp-server over a socket (see worker.proto).
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "service/common/framing.h"
#include "service/common/log.h"
#include "service/common/protobuf_log.h"
#include "service/worker/function_registry.h"
#include "service/worker/interpreter.h"
#include "service/worker/module_policy.h"
#include "service/worker/protocol/worker.pb.h"
#include "service/worker/server_watch.h"
#include "service/worker/task_loop.h"

namespace {

constexpr char kUsage[] = R"(usage: cnp-worker --fd=N [options]

Runs named Python functions for cnp-server: reads cnp.worker.v1.Task frames from the connected
stream socket on fd N and answers each with Reply frames. Exits 0 when the server closes it.
Started by cnp-server, not by hand.

  --fd=N                 the socket to serve (required; cnp-server passes 3)
  --python-path=DIR      a directory of modules with functions; repeatable
  --virtualenv=DIR       a Python 3.11 virtualenv whose site-packages to use (libraries:
                         callable only when --allow-module names them)
  --allow-module=PREFIX  only functions whose module is PREFIX or inside it may run;
                         repeatable. Either way, only Python functions defined in files
                         under --python-path or PYTHONPATH, or in an allowed library, may
                         run (never the standard library, pip, setuptools and other
                         installers, a class, a builtin or a bound method).
  --preload-module=MODULE import MODULE at start, before serving any task, with the checks
                         a function of it gets (a failure is logged, and the module is
                         imported when a function of it is first called); repeatable
  --memory-limit-mb=N    cap the worker's address space (RLIMIT_AS); a MemoryError then
                         fails that item and asks the server to recycle the worker
  --log-format=text|json the format of the lines this worker writes to the server's log
                         itself (a direct session's functions' log() lines), as cnp-server's
  --log-level=LEVEL      debug, info (default), warning or error, as cnp-server's
  --log-fd=N             write this worker's log lines to descriptor N (cnp-server passes
                         4, its own log; the worker's stdout and stderr are then a pipe the
                         server reads, relaying what is written there raw as log events);
                         without it, to stderr
  --help                 this text

The couch_named_python package is found in the binary's runfiles, or in
<exe dir>/../share/cnp/python; CNP_PYTHON_PACKAGE_DIR overrides both.
)";

struct Flags {
  int fd = -1;
  int log_fd = -1;
  cnp::worker::InterpreterOptions interpreter;
  std::vector<std::string> allowed_modules;
  std::vector<std::string> preload_modules;
  long memory_limit_mb = 0;
};

bool TakeValue(const char* arg, const char* name, std::string& value) {
  size_t n = std::strlen(name);
  if (std::strncmp(arg, name, n) != 0 || arg[n] != '=') return false;
  value = arg + n + 1;
  return true;
}

// Says why to whoever started the worker: on stderr, and as the answer to its first task,
// which is how cnp-server learns it (it stops rather than start workers that all refuse).
int RefuseSetting(int fd, const std::string& why) {
  std::fprintf(stderr, "cnp-worker: %s\n", why.c_str());
  std::string task;
  if (cnp::ReadFrame(fd, task, absl::Now() + absl::Seconds(10)).ok()) {
    cnp::worker::v1::Reply refusal;
    refusal.mutable_failure()->set_code(cnp::worker::v1::Failure::BAD_SETTING);
    refusal.mutable_failure()->set_message(why);
    cnp::worker::v1::Task first;
    if (first.ParseFromString(task)) refusal.set_sequence(first.sequence());
    (void)cnp::WriteFrame(fd, refusal.SerializeAsString(), absl::Now() + absl::Seconds(10));
  }
  return 2;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "cnp-worker: %s\n(see cnp-worker --help)\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  cnp::worker::DieWithTheServer();
  cnp::SetLogProgram("cnp-worker");
  // The server and every worker write to one stderr pipe: a log line (a direct session's
  // function log() or traceback) must be one atomic write, or lines of other processes land in
  // the middle of it.
  cnp::SetMaxLogLineBytes(PIPE_BUF);
  // A task the worker cannot parse (a peer's function name that is not UTF-8, on a Session
  // stream) makes protobuf log a line: rate-limited and in the log's format, as the server's
  // own, rather than one raw stderr line per line a peer sends.
  cnp::RouteProtobufLog();
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string value;
    const char* arg = argv[i];
    if (std::strcmp(arg, "--help") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (TakeValue(arg, "--fd", value)) {
      if (!absl::SimpleAtoi(value, &flags.fd) || flags.fd < 0) return UsageError("bad --fd");
    } else if (TakeValue(arg, "--log-fd", value)) {
      if (!absl::SimpleAtoi(value, &flags.log_fd) || flags.log_fd < 0) {
        return UsageError("bad --log-fd");
      }
    } else if (TakeValue(arg, "--python-path", value)) {
      flags.interpreter.python_paths.push_back(value);
    } else if (TakeValue(arg, "--virtualenv", value)) {
      flags.interpreter.virtualenv = value;
    } else if (TakeValue(arg, "--allow-module", value)) {
      if (value.empty()) return UsageError("--allow-module needs a module name");
      flags.allowed_modules.push_back(value);
    } else if (TakeValue(arg, "--preload-module", value)) {
      if (value.empty()) return UsageError("--preload-module needs a module name");
      flags.preload_modules.push_back(value);
    } else if (TakeValue(arg, "--log-format", value)) {
      cnp::LogFormat format;
      if (!cnp::ParseLogFormat(value, format)) return UsageError("--log-format must be text or json");
      cnp::SetLogFormat(format);
    } else if (TakeValue(arg, "--log-level", value)) {
      cnp::LogLevel level;
      if (!cnp::ParseLogLevel(value, level)) return UsageError("bad --log-level");
      cnp::SetLogLevel(level);
    } else if (TakeValue(arg, "--memory-limit-mb", value)) {
      if (!absl::SimpleAtoi(value, &flags.memory_limit_mb) || flags.memory_limit_mb <= 0) {
        return UsageError("bad --memory-limit-mb");
      }
    } else {
      return UsageError(absl::StrCat("unknown argument ", arg));
    }
  }
  if (flags.fd < 0) return UsageError("--fd is required");

  // The server's socket is this process's alone: a process a function starts (os.system(), a
  // subprocess with close_fds=False) must not hold it open past the worker, nor write to it.
  // (CouchDB's pipes, and every descriptor the worker opens itself, are close-on-exec too.)
  if (const int fd_flags = ::fcntl(flags.fd, F_GETFD);
      fd_flags < 0 || ::fcntl(flags.fd, F_SETFD, fd_flags | FD_CLOEXEC) < 0) {
    std::fprintf(stderr, "cnp-worker: --fd=%d: %s\n", flags.fd, std::strerror(errno));
    return 1;
  }
  if (flags.log_fd >= 0) {
    // The log is the worker's own: a process a function starts must not inherit it (what it
    // writes goes to its stdout and stderr, the server's relay).
    if (const int fd_flags = ::fcntl(flags.log_fd, F_GETFD);
        fd_flags < 0 || ::fcntl(flags.log_fd, F_SETFD, fd_flags | FD_CLOEXEC) < 0) {
      std::fprintf(stderr, "cnp-worker: --log-fd=%d: %s\n", flags.log_fd, std::strerror(errno));
      return 1;
    }
    cnp::SetLogDescriptor(flags.log_fd);
  } else {
    // Nothing but the socket carries protocol; C-level writes to stdout go to stderr too.
    ::dup2(STDERR_FILENO, STDOUT_FILENO);
  }
  // A server that hangs up mid-reply is a write error to report, not a signal to die of.
  ::signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<std::string> package_dir = cnp::worker::FindPackageDir(argv[0]);
  if (!package_dir.ok()) {
    std::fprintf(stderr, "cnp-worker: %s\n", std::string(package_dir.status().message()).c_str());
    return 1;
  }
  flags.interpreter.package_dir = *package_dir;
  absl::StatusOr<cnp::worker::CodeRoots> roots = cnp::worker::StartInterpreter(flags.interpreter);
  if (!roots.ok()) {
    std::fprintf(stderr, "cnp-worker: %s\n", std::string(roots.status().message()).c_str());
    return 1;
  }
  // An --allow-module under which nothing can ever run (os, pip) is the operator's mistake, not
  // a call's: the server is told at its first task and does not start, where before it started
  // and then refused every call to it.
  for (const std::string& module : flags.allowed_modules) {
    const cnp::worker::ModuleRefusal never = cnp::worker::NeverCallableReason(module);
    if (never.why.empty()) continue;
    return RefuseSetting(flags.fd, absl::StrCat("--allow-module=", module, ": ", never.why,
                                                never.advice.empty() ? "" : ", and ", never.advice,
                                                ": no function under it can run; remove it "
                                                "from --allow-module"));
  }
  // After the interpreter is up, so the limit is about user code, not about starting Python.
  if (flags.memory_limit_mb > 0) {
    rlim_t bytes = static_cast<rlim_t>(flags.memory_limit_mb) << 20;
    rlimit limit{bytes, bytes};
    if (::setrlimit(RLIMIT_AS, &limit) != 0) {
      std::fprintf(stderr, "cnp-worker: setting --memory-limit-mb failed: %s\n",
                   std::strerror(errno));
      return 1;
    }
  }

  // The host out of memory (many workers, each under its cap): the kernel's OOM killer takes a
  // worker, which cnp-server replaces at the cost of the call it ran, before cnp-server (every
  // session and stream) or CouchDB, unless one of those holds 30% of the memory more than it.
  // Raising one's own score needs no privilege; where /proc is not writable it stays as it was.
  if (std::FILE* oom = std::fopen("/proc/self/oom_score_adj", "w")) {
    std::fputs("300", oom);
    std::fclose(oom);
  }

  cnp::worker::FunctionRegistry registry(
      cnp::worker::ModulePolicy(std::move(flags.allowed_modules), *std::move(roots)));
  // Before the first task (the server's start handshake waits for it), under the memory cap
  // and with no CouchDB timeout running: a slow import finishes once, here.
  for (const std::string& module : flags.preload_modules) {
    const absl::Time start = absl::Now();
    if (absl::Status loaded = registry.Preload(module); loaded.ok()) {
      cnp::LogInfo("preloaded module ", module, " in ", absl::FormatDuration(absl::Now() - start));
    } else {
      cnp::LogWarning("--preload-module=", module, ": ", loaded.message(),
                      "; its functions will be imported when first called");
    }
  }
  absl::Status served = cnp::worker::ServeTasks(flags.fd, registry);
  if (!served.ok()) {
    std::fprintf(stderr, "cnp-worker: %s\n", std::string(served.message()).c_str());
    return 1;
  }
  return 0;
}
