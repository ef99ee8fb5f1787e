#include "tests/support/spawn.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "tests/support/files.h"

namespace cnp::testing {
namespace {

// Above any descriptor a child is given, so that moving one into place never overwrites
// another that has yet to move.
constexpr int kStagingFd = 100;

// Runs in the forked child: only async-signal-safe calls until exec.
[[noreturn]] void ExecChild(const SpawnOptions& options, char* const* argv, char* const* envp,
                            const std::vector<int>& staged) {
  for (size_t i = 0; i < options.fds.size(); ++i) {
    ::dup2(staged[i], options.fds[i].first);  // the copy is not close-on-exec
  }
  if (!options.work_dir.empty() && ::chdir(options.work_dir.c_str()) != 0) ::_exit(126);
  if (options.umask.has_value()) ::umask(*options.umask);
  if (options.own_process_group) ::setpgid(0, 0);
  if (options.open_files > 0) {
    const rlimit files{options.open_files, options.open_files};
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  ::execvpe(argv[0], argv, envp);
  ::_exit(127);
}

}  // namespace

absl::StatusOr<pid_t> Spawn(const SpawnOptions& options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("Spawn needs a program");
  std::vector<std::string> strings = options.argv;
  std::vector<char*> argv;
  for (std::string& arg : strings) argv.push_back(arg.data());
  argv.push_back(nullptr);
  // The child's environment is built before the fork (the child may not allocate): the test's,
  // with options.env's entries replacing those of the same name.
  std::vector<std::string> env_strings;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view name = std::string_view(*entry).substr(0, std::strcspn(*entry, "="));
    const bool replaced = std::any_of(options.env.begin(), options.env.end(), [&](const auto& e) {
      return e.size() > name.size() && e.compare(0, name.size(), name) == 0 &&
             e[name.size()] == '=';
    });
    if (!replaced) env_strings.push_back(*entry);
  }
  env_strings.insert(env_strings.end(), options.env.begin(), options.env.end());
  std::vector<char*> envp;
  for (std::string& entry : env_strings) envp.push_back(entry.data());
  envp.push_back(nullptr);
  // Each given descriptor is first copied high and close-on-exec; the child moves it into place.
  std::vector<int> staged;
  const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  for (const auto& [child_fd, test_fd] : options.fds) {
    staged.push_back(::fcntl(test_fd >= 0 ? test_fd : null, F_DUPFD_CLOEXEC, kStagingFd));
  }
  const pid_t pid = ::fork();
  if (pid == 0) ExecChild(options, argv.data(), envp.data(), staged);
  const int fork_errno = errno;
  for (int fd : staged) ::close(fd);
  ::close(null);
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork failed for ", options.argv[0], ": errno ",
                                            fork_errno));
  }
  return pid;
}

int WaitForExit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

int ExitCode(int status) {
  if (status < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int RunToCompletion(const std::vector<std::string>& argv, const std::string& work_dir) {
  absl::StatusOr<pid_t> pid = Spawn(
      {.argv = argv, .fds = {{STDOUT_FILENO, -1}, {STDERR_FILENO, -1}}, .work_dir = work_dir});
  if (!pid.ok()) return -1;
  const int status = WaitForExit(*pid);
  return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

ProcessResult RunWithInput(const std::vector<std::string>& argv, const std::string& input,
                           Output output) {
  ProcessResult result;
  // Files, not pipes: no thread needed to keep a chatty program from blocking on a full pipe.
  const std::string dir = MakeTempDir("run");
  const std::string in_path = dir + "/stdin";
  const std::string out_path = dir + "/stdout";
  const std::string err_path = dir + "/stderr";
  WriteFile(in_path, input);
  const int in = ::open(in_path.c_str(), O_RDONLY | O_CLOEXEC);
  const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  absl::StatusOr<pid_t> pid =
      Spawn({.argv = argv,
             .fds = {{STDIN_FILENO, in},
                     {STDOUT_FILENO, out},
                     {STDERR_FILENO, output == Output::kTogether ? out : err}}});
  ::close(in);
  ::close(out);
  ::close(err);
  if (!pid.ok()) return result;
  const int status = WaitForExit(*pid);
  result.exit_code = status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = ReadFile(out_path);
  result.err = ReadFile(err_path);
  return result;
}

}  // namespace cnp::testing
