// Files that decide what cnp-server runs and whom it trusts pass the code files' owner/mode rule
// (common/code_ownership.h): owned by root or the server's user, writable by neither group nor
// others. The review's findings: a --config file owned by nobody, mode 0666, was obeyed by a
// root server, and its `worker-binary: /tmp/x/w.sh` (nobody's, 0777) ran as root; its
// `allow-uid: [65534]` was accepted. A 0600 token file owned by nobody was accepted. The access
// log followed a symlink and appended to a file another user owned.
//
// Unsandboxed: it gives files to nobody (uid 65534), which the sandbox's user namespace cannot.
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"
#include "tests/support/server_process.h"

namespace cnp::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uid_t kNobody = 65534;

void GiveToNobody(const std::string& path) {
  ASSERT_EQ(::chown(path.c_str(), kNobody, kNobody), 0) << path;
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

class TrustedFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to give files to another user";
    dir_ = ShortTempDir();
    // What the reviewer's w.sh would have done as root.
    marker_ = dir_ + "/ran-as-root";
    ::mkdir((dir_ + "/x").c_str(), 0777);
    ::chmod((dir_ + "/x").c_str(), 0777);
    GiveToNobody(dir_ + "/x");
    worker_ = dir_ + "/x/w.sh";
    WriteFile(worker_, absl::StrCat("#!/bin/sh\ntouch ", marker_, "\n"), 0777);
    GiveToNobody(worker_);
  }

  std::unique_ptr<ServerProcess> Launch(std::vector<std::string> args) {
    args.insert(args.begin(), {"--workers=1", "--grpc-threads=2",
                               "--python-path=" + Runfile("tests/functions/server"),
                               "--listen=unix:" + dir_ + "/s/cnp.sock"});
    return ServerProcess::Launch({.args = std::move(args), .fresh_socket = false});
  }

  void ExpectRefusedAtStart(ServerProcess& server) {
    ASSERT_FALSE(server.ready()) << server.Log();
    EXPECT_EQ(server.ExitCode(), 2) << server.Log();
    EXPECT_FALSE(Exists(marker_)) << "the untrusted worker binary ran";
  }

  std::string dir_, marker_, worker_;
};

// The reviewer's scenario, whole: refused at start, naming the file, what is wrong and the fix;
// nothing it names runs.
TEST_F(TrustedFilesTest, AConfigFileAnyoneMayWriteIsRefusedAndItsWorkerBinaryNeverRuns) {
  const std::string config = dir_ + "/cfg.yml";
  WriteFile(config, absl::StrCat("worker-binary: ", worker_, "\nallow-uid: [65534]\n"), 0666);
  GiveToNobody(config);
  auto server = Launch({"--config=" + config});
  ExpectRefusedAtStart(*server);
  EXPECT_THAT(server->Log(), AllOf(HasSubstr("config file " + config + " belongs to uid 65534"),
                                   HasSubstr("chown root " + config)));
}

TEST_F(TrustedFilesTest, AConfigFileOthersMayWriteIsRefusedWhoeverOwnsIt) {
  const std::string config = dir_ + "/cfg.yml";
  for (mode_t mode : {0666, 0664}) {
    WriteFile(config, "max-queue: 3\n", mode);
    auto server = Launch({"--config=" + config});
    ExpectRefusedAtStart(*server);
    EXPECT_THAT(server->Log(),
                AllOf(HasSubstr(absl::StrFormat("config file %s is writable by %s (mode %04o)",
                                                config, mode == 0666 ? "every user" : "its group",
                                                mode)),
                      HasSubstr("another user could change the settings cnp-server obeys"),
                      HasSubstr("run chmod go-w " + config)));
  }
  // Fixed as the message says, the same file is obeyed.
  ASSERT_EQ(::chmod(config.c_str(), 0644), 0);
  auto fixed = Launch({"--config=" + config});
  EXPECT_TRUE(fixed->ready()) << fixed->Log();
}

// A file only root may write is still replaced by whoever may write to its directory.
TEST_F(TrustedFilesTest, AConfigFileInADirectoryOthersMayWriteIsRefused) {
  const std::string open_dir = dir_ + "/open";
  ASSERT_EQ(::mkdir(open_dir.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(open_dir.c_str(), 0777), 0);
  WriteFile(open_dir + "/cfg.yml", "max-queue: 3\n", 0644);
  auto server = Launch({"--config=" + open_dir + "/cfg.yml"});
  ExpectRefusedAtStart(*server);
  EXPECT_THAT(server->Log(), AllOf(HasSubstr(open_dir + " is writable by every user"),
                                   HasSubstr("run chmod go-w " + open_dir)));
}

TEST_F(TrustedFilesTest, AWorkerBinaryAnotherUserMayChangeIsRefused) {
  auto nobodys = Launch({"--worker-binary=" + worker_});
  ExpectRefusedAtStart(*nobodys);
  EXPECT_THAT(nobodys->Log(),
              AllOf(HasSubstr("the worker binary (--worker-binary) " + worker_ +
                              " belongs to uid 65534"),
                    HasSubstr("another user could replace the program this server runs as its "
                              "workers"),
                    HasSubstr("chown root " + worker_)));

  // Root's own, but writable by every user; then root's in a directory nobody may write to.
  const std::string copy = dir_ + "/w.sh";
  WriteFile(copy, absl::StrCat("#!/bin/sh\ntouch ", marker_, "\n"), 0777);
  auto writable = Launch({"--worker-binary=" + copy});
  ExpectRefusedAtStart(*writable);
  EXPECT_THAT(writable->Log(), HasSubstr(copy + " is writable by every user (mode 0777)"));
  ASSERT_EQ(::chown(worker_.c_str(), 0, 0), 0);
  ASSERT_EQ(::chmod(worker_.c_str(), 0755), 0);
  auto in_nobodys_dir = Launch({"--worker-binary=" + worker_});
  ExpectRefusedAtStart(*in_nobodys_dir);
  EXPECT_THAT(in_nobodys_dir->Log(), HasSubstr(dir_ + "/x belongs to uid 65534"));
}

TEST_F(TrustedFilesTest, ATokenFileAnotherUserOwnsIsRefusedHoweverPrivate) {
  const std::string token = dir_ + "/token";
  WriteFile(token, "s3cret-token-of-nobody\n", 0600);
  GiveToNobody(token);
  auto server = Launch({"--listen=127.0.0.1:0", "--auth-token-file=" + token});
  ASSERT_FALSE(server->ready()) << server->Log();
  EXPECT_THAT(server->Log(), AllOf(HasSubstr(token + " belongs to uid 65534"),
                                   HasSubstr("chown root " + token),
                                   Not(HasSubstr("s3cret-token"))));
  ASSERT_EQ(::chown(token.c_str(), 0, 0), 0);
  auto fixed = Launch({"--listen=127.0.0.1:0", "--auth-token-file=" + token});
  EXPECT_TRUE(fixed->ready()) << fixed->Log();
}

TEST_F(TrustedFilesTest, TheAccessLogIsNeverASymlinkNorAFileAnotherUserKeeps) {
  const std::string target = dir_ + "/elsewhere";
  WriteFile(target, "", 0600);
  const std::string link = dir_ + "/access.log";
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  auto through_link = Launch({"--access-log=" + link});
  ASSERT_FALSE(through_link->ready());
  EXPECT_THAT(through_link->Log(), HasSubstr("--access-log: " + link + " is a symbolic link"));

  const std::string nobodys = dir_ + "/nobodys.log";
  WriteFile(nobodys, "", 0600);
  GiveToNobody(nobodys);
  auto owned = Launch({"--access-log=" + nobodys});
  ASSERT_FALSE(owned->ready());
  EXPECT_THAT(owned->Log(), HasSubstr("--access-log: " + nobodys + " belongs to uid 65534"));

  const std::string shared = dir_ + "/shared.log";
  WriteFile(shared, "", 0622);
  auto writable = Launch({"--access-log=" + shared});
  ASSERT_FALSE(writable->ready());
  EXPECT_THAT(writable->Log(),
              AllOf(HasSubstr("--access-log: " + shared + " is writable by every user"),
                    HasSubstr("run chmod go-w " + shared)));

  // The server's own existing log is appended to, as before.
  ASSERT_EQ(::chmod(shared.c_str(), 0600), 0);
  auto fine = Launch({"--access-log=" + shared});
  EXPECT_TRUE(fine->ready()) << fine->Log();
}

}  // namespace
}  // namespace cnp::testing
