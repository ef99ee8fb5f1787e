// Starting a program from a test: the one place tests fork and exec. The child gets exactly the
// descriptors the options name (everything else the test holds is close-on-exec or closed).
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace cnp::testing {

struct SpawnOptions {
  // argv[0] is a path, or a name looked up on PATH.
  std::vector<std::string> argv;
  // "NAME=value" entries added to (or replacing in) the test's environment.
  std::vector<std::string> env;
  // {child's fd, test's fd}: e.g. {STDERR_FILENO, log} or {3, socket}. A test fd of -1 means
  // /dev/null. Standard descriptors not named here are inherited.
  std::vector<std::pair<int, int>> fds;
  // The child's working directory; empty: the test's.
  std::string work_dir;
  std::optional<mode_t> umask;
  // > 0: the child's RLIMIT_NOFILE, soft and hard.
  rlim_t open_files = 0;
  // The child leads a process group of its own, as a shell's foreground job does: kill(-pid)
  // then signals it and its children the way a terminal's Ctrl-C does.
  bool own_process_group = false;
};

// Forks and execs; the child's pid. A child that cannot exec exits 127 (126 when it cannot
// enter work_dir).
absl::StatusOr<pid_t> Spawn(const SpawnOptions& options);

// Waits for the child (retrying on EINTR); waitpid's status, or -1 if there is no such child.
int WaitForExit(pid_t pid);

// The exit code of a waitpid status: the code it exited with, or 128 + the signal that ended it.
int ExitCode(int status);

// Runs a program to completion with its output discarded; its exit code, -1 if it could not
// start.
int RunToCompletion(const std::vector<std::string>& argv, const std::string& work_dir = "");

// A program run to completion with `input` on its stdin and its output collected.
struct ProcessResult {
  int exit_code = -1;  // -1 also when it could not start or a signal ended it
  std::string out;
  std::string err;
};
enum class Output {
  kSeparate,  // stdout in `out`, stderr in `err`
  kTogether,  // both in `out`, in the order written (as a terminal shows them)
};
ProcessResult RunWithInput(const std::vector<std::string>& argv, const std::string& input,
                           Output output = Output::kSeparate);

}  // namespace cnp::testing
