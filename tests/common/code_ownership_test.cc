// The owner/mode rule for files and directories of code (common/code_ownership.h), on stat
// results as the kernel reports them, and on a real file whose mode changes.
#include "common/code_ownership.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp {
namespace {

using ::testing::HasSubstr;

struct stat Stat(uid_t uid, mode_t mode) {
  struct stat st {};
  st.st_uid = uid;
  st.st_mode = mode;
  return st;
}

// A uid that is neither root nor this process's.
uid_t SomeoneElse() { return ::geteuid() == 65534 ? 65533 : 65534; }

TEST(CodeOwnershipTest, MineOrRootsAndWritableOnlyByTheOwnerPasses) {
  EXPECT_EQ(OthersCanChange("/code/m.py", Stat(::geteuid(), S_IFREG | 0644)), std::nullopt);
  EXPECT_EQ(OthersCanChange("/code/m.py", Stat(0, S_IFREG | 0600)), std::nullopt);
  EXPECT_EQ(OthersCanChange("/code", Stat(0, S_IFDIR | 0755)), std::nullopt);
  EXPECT_EQ(OthersCanChange("/code", Stat(::geteuid(), S_IFDIR | 0700)), std::nullopt);
}

TEST(CodeOwnershipTest, AnotherUsersFileIsRefusedWhateverItsMode) {
  for (mode_t mode : {0600, 0644, 0444}) {
    std::optional<OwnershipProblem> problem =
        OthersCanChange("/code/m.py", Stat(SomeoneElse(), S_IFREG | mode));
    ASSERT_TRUE(problem.has_value()) << mode;
    EXPECT_THAT(problem->what, HasSubstr("belongs to uid " + std::to_string(SomeoneElse())));
    EXPECT_THAT(problem->what, HasSubstr("neither root nor this user"));
    EXPECT_THAT(problem->fix, HasSubstr("chown /code/m.py to root or uid " +
                                        std::to_string(::geteuid())));
  }
}

TEST(CodeOwnershipTest, WritableByGroupOrOthersIsRefusedNamingWhoAndTheFix) {
  std::optional<OwnershipProblem> group = OthersCanChange("/code/m.py", Stat(0, S_IFREG | 0664));
  ASSERT_TRUE(group.has_value());
  EXPECT_EQ(group->what, "is writable by its group (mode 0664)");
  EXPECT_EQ(group->fix, "run chmod go-w /code/m.py");
  std::optional<OwnershipProblem> everyone =
      OthersCanChange("/code/__pycache__", Stat(::geteuid(), S_IFDIR | 0757));
  ASSERT_TRUE(everyone.has_value());
  EXPECT_EQ(everyone->what, "is writable by every user (mode 0757)");
  EXPECT_EQ(everyone->fix, "run chmod go-w /code/__pycache__");
}

TEST(CodeOwnershipTest, TheStickyBitSufficesOnlyAboveTheCodeAndOnlyOnDirectories) {
  struct stat tmp = Stat(0, S_IFDIR | 01777);
  EXPECT_EQ(OthersCanChange("/tmp", tmp, StickyBit::kSuffices), std::nullopt);
  // The code's own directory: others could still add modules to a sticky one.
  std::optional<OwnershipProblem> own = OthersCanChange("/tmp", tmp);
  ASSERT_TRUE(own.has_value());
  EXPECT_EQ(own->what, "is writable by every user (mode 1777)");
  // Found by a review: the advice was only `chmod go-w /tmp`, which breaks the host. For a
  // directory that may be shared, the other way out is said too.
  EXPECT_EQ(own->fix, "run chmod go-w /tmp, unless all users share it (as /tmp): then move the "
                      "code to a directory of your own");
  // A group-writable sticky directory is someone's own: closing it is the fix.
  std::optional<OwnershipProblem> group =
      OthersCanChange("/srv/views", Stat(::geteuid(), S_IFDIR | 01775));
  ASSERT_TRUE(group.has_value());
  EXPECT_EQ(group->fix, "run chmod go-w /srv/views");
  std::optional<OwnershipProblem> above =
      OthersCanChange("/srv", Stat(0, S_IFDIR | 0775), StickyBit::kSuffices);
  ASSERT_TRUE(above.has_value());
  EXPECT_THAT(above->what, HasSubstr("is writable by its group without the sticky bit (mode 0775)"));
  EXPECT_EQ(above->fix, "run chmod go-w /srv");
  // The sticky bit means nothing on a file.
  EXPECT_TRUE(OthersCanChange("/srv/m.py", Stat(0, S_IFREG | 01666), StickyBit::kSuffices));
  // Nor does it excuse another user's directory.
  EXPECT_TRUE(OthersCanChange("/srv", Stat(SomeoneElse(), S_IFDIR | 01755), StickyBit::kSuffices));
}

TEST(CodeOwnershipTest, ARealFileIsJudgedByWhatStatSays) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string file = std::string(tmp != nullptr ? tmp : "/tmp") + "/code_ownership_test.py";
  int fd = ::open(file.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
  struct stat st {};
  ASSERT_EQ(::chmod(file.c_str(), 0644), 0);
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(OthersCanChange(file, st), std::nullopt);
  ASSERT_EQ(::chmod(file.c_str(), 0646), 0);
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  std::optional<OwnershipProblem> problem = OthersCanChange(file, st);
  ASSERT_TRUE(problem.has_value());
  EXPECT_EQ(problem->what, "is writable by every user (mode 0646)");
  EXPECT_EQ(problem->fix, "run chmod go-w " + file);
  ::unlink(file.c_str());
}

}  // namespace
}  // namespace cnp
