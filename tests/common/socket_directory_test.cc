// Where a unix socket may live: a directory others may write to is refused, with a fix that
// does not break the host.
#include "common/socket_directory.h"

#include <sys/stat.h>

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp {
namespace {

using ::testing::HasSubstr;

std::string FreshDirectory(mode_t mode) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/socket-dir-XXXXXX";
  if (::mkdtemp(dir.data()) == nullptr) return "";
  ::chmod(dir.c_str(), mode);
  return dir;
}

TEST(SocketDirectoryTest, AnOpenDirectoryIsToldToCloseIt) {
  const std::string dir = FreshDirectory(0777);
  ASSERT_FALSE(dir.empty());
  const absl::Status refused = CheckSocketDirectory(dir, DirectoryOwner::kMe);
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.message()), HasSubstr("chmod go-w " + dir));
  ASSERT_EQ(::chmod(dir.c_str(), 0700), 0);
  EXPECT_TRUE(CheckSocketDirectory(dir, DirectoryOwner::kMe).ok());
}

// Found by a review: a socket in /tmp was answered only "run chmod go-w /tmp", which breaks
// the host. For a directory that may be shared, a directory of one's own comes first.
TEST(SocketDirectoryTest, ASharedStickyDirectoryIsToldToUseAnotherFirst) {
  const std::string dir = FreshDirectory(01777);
  ASSERT_FALSE(dir.empty());
  const absl::Status refused = CheckSocketDirectory(dir, DirectoryOwner::kMe);
  EXPECT_FALSE(refused.ok());
  const std::string message(refused.message());
  EXPECT_THAT(message, HasSubstr("put the socket in a directory of your own"));
  EXPECT_THAT(message, HasSubstr("(never /tmp)"));
}

}  // namespace
}  // namespace cnp
