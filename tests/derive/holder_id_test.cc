// Whether a lease's holder is a process of this host that has ended (client/derive/holder_id.h).
#include "client/derive/holder_id.h"

#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace cnp::derive {
namespace {

std::string Host() {
  const std::string own = NewHolderId();
  return own.substr(0, own.find(':'));
}

TEST(HolderIdTest, AProcessOfThisHostThatHasEnded) {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  EXPECT_TRUE(HolderEndedOnThisHost(absl::StrCat(Host(), ":", child, ":0badf00d")));
}

TEST(HolderIdTest, ALiveProcessAnotherHostOrAnotherShapeIsNot) {
  EXPECT_FALSE(HolderEndedOnThisHost(absl::StrCat(Host(), ":", ::getppid(), ":0badf00d")));
  EXPECT_FALSE(HolderEndedOnThisHost("some-other-host:999999:0badf00d"));
  EXPECT_FALSE(HolderEndedOnThisHost("no-colons"));
  EXPECT_FALSE(HolderEndedOnThisHost(absl::StrCat(Host(), ":x:0badf00d")));
  EXPECT_FALSE(HolderEndedOnThisHost(absl::StrCat(Host(), ":-5:0badf00d")));
}

// A container restarted under the same host name runs each `cnp derive` as pid 1: a holder of
// this pid that is not this process ran before it (a review found it taken for alive).
TEST(HolderIdTest, AnotherHolderWithThisProcesssPidHasEnded) {
  EXPECT_TRUE(HolderEndedOnThisHost(absl::StrCat(Host(), ":", ::getpid(), ":0badf00d")));
}

TEST(HolderIdTest, NewIdsNameThisHostAndProcess) {
  const std::vector<std::string> parts = absl::StrSplit(NewHolderId(), ':');
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[1], absl::StrCat(::getpid()));
  EXPECT_EQ(parts[2].size(), 8u);
}

}  // namespace
}  // namespace cnp::derive
