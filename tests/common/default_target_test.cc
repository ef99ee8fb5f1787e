// Where the default socket lives: /tmp/cnp-<uid>, unless another user made that first (anyone
// may create names in /tmp), which used to stop every client of this user.
#include "common/default_target.h"

#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"

namespace cnp {
namespace {

constexpr uid_t kSomeoneElse = 65534;

class DefaultRuntimeDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = testing::MakeTempDir("tmp");
    xdg_ = testing::MakeTempDir("xdg");
    home_ = testing::MakeTempDir("home");
    ASSERT_FALSE(tmp_.empty() || xdg_.empty() || home_.empty());
    shared_ = absl::StrCat(tmp_, "/cnp-", me_);
  }
  // Another user's directory (or symlink) where ours belongs.
  void Squat(bool as_symlink = false) {
    if (::geteuid() != 0) GTEST_SKIP() << "making another user's directory needs root";
    ASSERT_EQ(as_symlink ? ::symlink(home_.c_str(), shared_.c_str()) : ::mkdir(shared_.c_str(), 0700), 0);
    ASSERT_EQ(::lchown(shared_.c_str(), kSomeoneElse, kSomeoneElse), 0);
  }

  const uid_t me_ = ::getuid();
  std::string tmp_, xdg_, home_, shared_;
};

TEST_F(DefaultRuntimeDirTest, TmpWhenFreeOrOurs) {
  EXPECT_EQ(RuntimeDirFor(me_, tmp_, xdg_.c_str(), home_.c_str()), shared_);
  ASSERT_EQ(::mkdir(shared_.c_str(), 0700), 0);
  EXPECT_EQ(RuntimeDirFor(me_, tmp_, xdg_.c_str(), home_.c_str()), shared_);
}

TEST_F(DefaultRuntimeDirTest, AnotherUsersDirectoryIsPassedOverForOneOfOurOwn) {
  Squat();
  EXPECT_EQ(RuntimeDirFor(me_, tmp_, xdg_.c_str(), home_.c_str()), xdg_ + "/cnp");
  EXPECT_EQ(RuntimeDirFor(me_, tmp_, nullptr, home_.c_str()), home_ + "/.cnp");
  // Relative, or not ours: not a place of our own.
  EXPECT_EQ(RuntimeDirFor(me_, tmp_, "run/user", home_.c_str()), home_ + "/.cnp");
  ASSERT_EQ(::chown(xdg_.c_str(), kSomeoneElse, kSomeoneElse), 0);
  EXPECT_EQ(RuntimeDirFor(me_, tmp_, xdg_.c_str(), home_.c_str()), home_ + "/.cnp");
  // Nowhere else to go: the shared one, which the clients then refuse naming its owner.
  EXPECT_EQ(RuntimeDirFor(me_, tmp_, nullptr, nullptr), shared_);
}

TEST_F(DefaultRuntimeDirTest, AnotherUsersSymlinkIsPassedOverToo) {
  Squat(/*as_symlink=*/true);
  EXPECT_EQ(RuntimeDirFor(me_, tmp_, nullptr, home_.c_str()), home_ + "/.cnp");
}

}  // namespace
}  // namespace cnp
