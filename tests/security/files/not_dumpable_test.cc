// cnp-server holds the bearer token, the TLS key and Uploads' CouchDB credentials, so it makes
// itself not dumpable at start (PR_SET_DUMPABLE 0): no core dump writes them to disk, and no
// other process of its user may ptrace it or read its /proc/PID/mem or environ. The kernel shows
// this as /proc/PID/environ (and the other private files there) owned by root whatever user the
// process runs as; /proc/PID itself always shows the process's user. Before, a server run as
// nobody had /proc/PID/environ owned by nobody: any process of that user could read its memory.
//
// Unsandboxed: the server runs as nobody (uid 65534), which needs a real setuid. It is a copy
// of cnp-server in a directory nobody may enter (the runfiles are under root's home), with the
// stand-in worker (fake_worker.py): only the server's own process matters here.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"

namespace cnp::testing {
namespace {

constexpr uid_t kNobody = 65534;

// The "Uid:" line of /proc/PID/status: real, effective, saved and filesystem uid.
std::string UidLine(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Uid:", 0) == 0) return line;
  }
  return "";
}

TEST(NotDumpableTest, AServerRunningAsAnotherUserKeepsItsProcessToRoot) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run the server as nobody";
  const std::string dir = ShortTempDir();
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  namespace fs = std::filesystem;
  fs::copy_file(Runfile("service/cnp-server"), dir + "/cnp-server");
  ASSERT_EQ(::chmod((dir + "/cnp-server").c_str(), 0755), 0);
  for (const char* file : {"fake_worker.py", "session_wire.py"}) {  // the second, its import
    fs::copy_file(Runfile(absl::StrCat("tests/support/", file)), absl::StrCat(dir, "/", file));
    ASSERT_EQ(::chmod(absl::StrCat(dir, "/", file).c_str(), 0644), 0);
  }
  WriteFile(dir + "/worker.sh",
            absl::StrCat("#!/bin/sh\nexec /usr/bin/python3.11 ", dir, "/fake_worker.py \"$@\"\n"),
            0755);
  ASSERT_EQ(::mkdir((dir + "/s").c_str(), 0700), 0);
  ASSERT_EQ(::chown((dir + "/s").c_str(), kNobody, kNobody), 0);
  const std::string log_path = dir + "/server.log";
  const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(log, 0);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);

  std::vector<std::string> args = {dir + "/cnp-server",
                                   "--workers=1",
                                   "--grpc-threads=1",
                                   "--max-sessions=0",
                                   "--spare-session-workers=0",
                                   "--worker-binary=" + dir + "/worker.sh",
                                   "--listen=unix:" + dir + "/s/cnp.sock",
                                   "--ready-fd=5"};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(ready[0]);
    if (::dup2(ready[1], 5) < 0 || ::dup2(log, STDERR_FILENO) < 0) ::_exit(126);
    ::unsetenv("PYTHONPATH");
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    if (::setgroups(0, nullptr) != 0 || ::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) {
      ::_exit(126);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(ready[1]);
  ::close(log);
  char buffer[16];
  ssize_t n;
  while ((n = ::read(ready[0], buffer, sizeof buffer)) < 0 && errno == EINTR) {
  }
  ::close(ready[0]);
  const bool up = n > 0;
  std::string uids = UidLine(pid);
  struct stat proc {};
  const int stat_result = ::stat(absl::StrCat("/proc/", pid, "/environ").c_str(), &proc);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(up) << ReadFile(log_path);
  // It really runs as nobody, so root's ownership of /proc/PID/environ is the kernel's doing.
  EXPECT_THAT(uids, ::testing::MatchesRegex("Uid:\\s+65534\\s+65534\\s+65534\\s+65534"));
  ASSERT_EQ(stat_result, 0);
  EXPECT_EQ(proc.st_uid, 0u) << "/proc/" << pid << "/environ belongs to uid " << proc.st_uid
                             << ": the server is dumpable";
}

}  // namespace
}  // namespace cnp::testing
