// SIGHUP reopens the access log: after logrotate renames the file (its `create` mode) and
// signals the server, new lines go to a new file at the path, and the renamed one keeps what
// was written before. Before, the server went on writing to the renamed file until it restarted.
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/lib/cnp_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"
#include "tests/support/server_process.h"

namespace cnp {
namespace {

using ::cnp::testing::ReadFile;
using ::cnp::testing::Runfile;
using ::cnp::testing::ServerProcess;
using ::cnp::testing::ShortTempDir;
using ::cnp::testing::WriteFile;
using ::testing::HasSubstr;
using ::testing::Not;

// Waits until the file at `path` holds `needle`, woken by inotify on its directory (the file
// may not exist yet); false once `timeout` has passed.
bool WaitForFileToHold(const std::string& dir, const std::string& path,
                       const std::string& needle, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const int watch = ::inotify_init1(IN_CLOEXEC);
  ::inotify_add_watch(watch, dir.c_str(), IN_MODIFY | IN_CREATE | IN_MOVED_TO);
  // Watch first, then read: a line written in between still wakes the poll.
  while (!absl::StrContains(ReadFile(path), needle)) {
    const int left = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd fd{watch, POLLIN, 0};
    if (left <= 0 || ::poll(&fd, 1, left) <= 0) break;
    char events[4096];
    (void)!::read(watch, events, sizeof events);
  }
  ::close(watch);
  return absl::StrContains(ReadFile(path), needle);
}

// A server that writes its access log to `log_`, in a directory of the test's own, and a client
// of it that does not send the server's token: each of the client's calls is refused, and
// logged.
class AccessLogReopenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteFile(dir_ + "/token", "t0ken-for-reopen\n", 0600);
    server_ = ServerProcess::Launch(
        {.args = {"--workers=1", "--python-path=" + Runfile("tests/functions/server"),
                  "--listen=127.0.0.1:0", "--auth-token-file=" + dir_ + "/token",
                  "--access-log=" + log_}});
    ASSERT_TRUE(server_->ready()) << server_->Log();
    auto connected = client::Client::Connect(absl::StrCat("127.0.0.1:", server_->Port()));
    ASSERT_TRUE(connected.ok()) << connected.status();
    client_ = *std::move(connected);
  }

  const std::string dir_ = ShortTempDir();
  const std::string log_ = dir_ + "/access.log";
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(AccessLogReopenTest, SighupMovesTheAccessLogToANewFileAtItsPath) {
  const std::string rotated = dir_ + "/access.log.1";

  // Calls without the token are refused, each with an access-log line: Map's before the
  // rotation, Reduce's after it (another method, so not counted into the first line).
  EXPECT_FALSE(client_->Map({"svc_fns.doubled"}, {R"({"_id":"a","n":1})"}).ok());
  ASSERT_TRUE(WaitForFileToHold(dir_, log_, "call=Map", absl::Seconds(10))) << ReadFile(log_);

  ASSERT_EQ(std::rename(log_.c_str(), rotated.c_str()), 0);
  server_->Signal(SIGHUP);
  ASSERT_TRUE(server_->WaitForLog("reopened the access log " + log_, absl::Seconds(10)))
      << server_->Log();
  // Found by a probe: the direct-session listener kept a descriptor of its own on the renamed
  // file, and its refusals went on there (and were lost with it).
  std::vector<std::string> on_rotated;
  const std::string fds = absl::StrCat("/proc/", server_->pid(), "/fd");
  for (const auto& entry : std::filesystem::directory_iterator(fds)) {
    std::error_code error;
    if (std::filesystem::read_symlink(entry.path(), error).string() == rotated) {
      on_rotated.push_back(entry.path().filename().string());
    }
  }
  EXPECT_TRUE(on_rotated.empty()) << "descriptors still on the renamed file: "
                                  << absl::StrJoin(on_rotated, ", ");

  EXPECT_FALSE(client_->Reduce({"svc_fns.total"}, "[]", /*rereduce=*/false).ok());
  ASSERT_TRUE(WaitForFileToHold(dir_, log_, "call=Reduce", absl::Seconds(10)))
      << "new file: " << ReadFile(log_) << "\nrenamed file: " << ReadFile(rotated);
  EXPECT_THAT(ReadFile(log_), Not(HasSubstr("call=Map")));
  EXPECT_THAT(ReadFile(rotated), HasSubstr("call=Map"));
  EXPECT_THAT(ReadFile(rotated), Not(HasSubstr("call=Reduce")));
}

// A path the server may no longer write leaves the log where it was, and says so.
TEST_F(AccessLogReopenTest, AReopenThatFailsKeepsTheOldFile) {
  const std::string elsewhere = dir_ + "/elsewhere";

  // A symlink now stands at the path: never followed, at a reopen as at start.
  const std::string kept = dir_ + "/kept.log";
  ASSERT_EQ(std::rename(log_.c_str(), kept.c_str()), 0);
  WriteFile(elsewhere, "", 0600);
  ASSERT_EQ(::symlink(elsewhere.c_str(), log_.c_str()), 0);
  server_->Signal(SIGHUP);
  ASSERT_TRUE(server_->WaitForLog("the access log goes on in the file opened before",
                                 absl::Seconds(10)))
      << server_->Log();
  EXPECT_THAT(server_->Log(), HasSubstr(log_ + " is a symbolic link"));

  EXPECT_FALSE(client_->Map({"svc_fns.doubled"}, {R"({"_id":"a","n":1})"}).ok());
  ASSERT_TRUE(WaitForFileToHold(dir_, kept, "call=Map", absl::Seconds(10))) << ReadFile(kept);
  EXPECT_EQ(ReadFile(elsewhere), "");
}

}  // namespace
}  // namespace cnp
