// A symbolic link on the way to code or to a file cnp trusts is followed only when root or the
// service's user owns it. Found by a security probe: a --python-path entry, or a module file,
// reached through a link another user owned in a sticky directory (/tmp) passed every check,
// and that user, who may replace their own link there at any time, pointed it at another
// directory of root's: the server imported what they chose under the allowed module's name.
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/code_directories.h"
#include "common/trusted_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/worker_process.h"

namespace cnp {
namespace {

using ::cnp::worker::testing::DesignTask;
using ::cnp::worker::testing::Reply;
using ::cnp::worker::testing::WorkerProcess;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr uid_t kNobody = 65534;

class SymlinkOwnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "gives a link to another user: needs root";
    dir_ = testing::MakeTempDir("links");
    ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
    // A directory a group shares, sticky: each member may add entries, and replace only their
    // own. (Not world-writable as /tmp: there the kernel's fs.protected_symlinks, where it is
    // on, already refuses to follow another user's link, and this test would not reach cnp's
    // own check.)
    shared_ = dir_ + "/shared";
    ASSERT_EQ(::mkdir(shared_.c_str(), 01775), 0);
    ASSERT_EQ(::chmod(shared_.c_str(), 01775), 0);
  }

  // `link` -> `target`, owned by `uid`.
  static void Link(const std::string& target, const std::string& link, uid_t uid) {
    ::unlink(link.c_str());
    ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0) << link;
    ASSERT_EQ(::lchown(link.c_str(), uid, uid), 0) << link;
  }

  // code/ (the worker's --python-path) and real/ (where the file a link picks is), both
  // private; the module's top-level code leaves marker_ behind.
  void MakeCodeDirectories() {
    code_ = dir_ + "/code";
    real_ = dir_ + "/real";
    marker_ = dir_ + "/imported";
    ASSERT_EQ(::mkdir(code_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(real_.c_str(), 0755), 0);
  }
  bool Imported() const {
    struct stat st {};
    return ::stat(marker_.c_str(), &st) == 0;
  }

  std::string dir_;
  std::string shared_;
  std::string code_, real_, marker_;
};

TEST_F(SymlinkOwnerTest, ACodeDirectoryThroughAnotherUsersLinkIsRefused) {
  const std::string code = dir_ + "/code";
  ASSERT_EQ(::mkdir(code.c_str(), 0755), 0);
  const std::string link = shared_ + "/code";
  Link(code, link, kNobody);
  absl::Status refused = CheckCodeDirectories(CodeDirectories({link}, nullptr, ""));
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_THAT(refused.message(),
              AllOf(HasSubstr(absl::StrCat(link, " is a symbolic link (to ", code,
                                           ") that belongs to uid 65534")),
                    HasSubstr("another user could change the Python code this service runs"),
                    HasSubstr("name " + code + " directly")));
  // The same link, the service's own, passes: its owner is the one who may repoint it.
  Link(code, link, ::geteuid());
  EXPECT_TRUE(CheckCodeDirectories(CodeDirectories({link}, nullptr, "")).ok());
}

TEST_F(SymlinkOwnerTest, ATrustedFileThroughAnotherUsersLinkIsRefused) {
  const std::string config = dir_ + "/cnp.yml";
  testing::WriteFile(config, "workers: 1\n", 0600);
  // cnp.yml <- shared/hop (nobody's) <- etc.yml: a link to a link, the middle one not ours.
  const std::string hop = shared_ + "/hop";
  Link(config, hop, kNobody);
  const std::string given = dir_ + "/etc.yml";
  Link(hop, given, ::geteuid());
  absl::Status refused = CheckTrustedFile(given, "config file", "change the settings");
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_THAT(refused.message(), HasSubstr(hop + " is a symbolic link (to " + config +
                                           ") that belongs to uid 65534"));
  Link(config, hop, ::geteuid());
  EXPECT_TRUE(CheckTrustedFile(given, "config file", "change the settings").ok());
}

// The module file's own link, below a private code directory, into a shared directory where
// another user's link picks the file: nothing of it runs, its top-level code included.
TEST_F(SymlinkOwnerTest, AModuleThroughAnotherUsersLinkIsRefusedAtImport) {
  ASSERT_NO_FATAL_FAILURE(MakeCodeDirectories());
  testing::WriteFile(real_ + "/chosen.py",
                     absl::StrCat("open('", marker_, "', 'w').close()\n"
                                  "def show(doc, req):\n    return {'body': 'chosen ran'}\n"),
                     0644);
  const std::string hop = shared_ + "/linked.py";
  Link(real_ + "/chosen.py", hop, kNobody);
  Link(hop, code_ + "/linked.py", ::geteuid());

  auto worker = WorkerProcess::Start({"--python-path=" + code_});
  ASSERT_TRUE(worker.ok()) << worker.status();
  Reply refused = (*worker)->Call(DesignTask(cnp::v1::SHOW, "linked.show", "[null, {}]"));
  ASSERT_TRUE(refused.has_failure()) << refused.DebugString();
  EXPECT_EQ(refused.failure().code(), worker::v1::Failure::PERMISSION_DENIED);
  EXPECT_THAT(refused.failure().message(),
              AllOf(HasSubstr("is not allowed"),
                    HasSubstr(hop + " is a symbolic link (to " + real_ +
                              "/chosen.py) that belongs to uid 65534")));
  EXPECT_FALSE(Imported()) << "the module's top-level code ran";

  // Once the link is the service's own, the module runs.
  Link(real_ + "/chosen.py", hop, ::geteuid());
  Reply ran = (*worker)->Call(DesignTask(cnp::v1::SHOW, "linked.show", "[null, {}]"));
  EXPECT_EQ(ran.design().reply(), R"(["resp",{"body":"chosen ran"}])") << ran.DebugString();
}

// The same link on the way to a module that an allowed module imports (found by a review of
// the fix: only the module a name asked for, and its function's file, were walked; what they
// import is checked as it is opened).
TEST_F(SymlinkOwnerTest, AModuleAnAllowedOneImportsThroughAnotherUsersLinkIsRefused) {
  ASSERT_NO_FATAL_FAILURE(MakeCodeDirectories());
  testing::WriteFile(real_ + "/chosen.py",
                     absl::StrCat("open('", marker_, "', 'w').close()\nNAME = 'chosen'\n"), 0644);
  testing::WriteFile(code_ + "/top.py",
                     "import helper\n"
                     "def show(doc, req):\n    return {'body': helper.NAME}\n",
                     0644);
  const std::string hop = shared_ + "/helper.py";
  Link(real_ + "/chosen.py", hop, kNobody);
  Link(hop, code_ + "/helper.py", ::geteuid());

  auto worker = WorkerProcess::Start({"--python-path=" + code_});
  ASSERT_TRUE(worker.ok()) << worker.status();
  Reply refused = (*worker)->Call(DesignTask(cnp::v1::SHOW, "top.show", "[null, {}]"));
  ASSERT_TRUE(refused.has_failure()) << refused.DebugString();
  EXPECT_THAT(refused.failure().message(),
              HasSubstr(hop + " is a symbolic link (to " + real_ +
                        "/chosen.py) that belongs to uid 65534"));
  EXPECT_FALSE(Imported()) << "the imported module's top-level code ran";
}

}  // namespace
}  // namespace cnp
