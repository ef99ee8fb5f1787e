// Both of the server's unix sockets admit the same users: its own, root, and --allow-uid's.
#include "service/common/socket_users.h"

#include <unistd.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::Not;

TEST(UnixSocketUsersTest, TheServersOwnUserRootAndThoseAllowed) {
  const std::set<uid_t> users = UnixSocketUsers({4242, 65534});
  EXPECT_THAT(users, Contains(::geteuid()));
  EXPECT_THAT(users, Contains(0u));
  EXPECT_THAT(users, Contains(4242u));
  EXPECT_THAT(users, Contains(65534u));
  EXPECT_THAT(users, Not(Contains(4243u)));
}

TEST(UnixSocketUsersTest, NobodyElseByDefault) {
  const std::set<uid_t> users = UnixSocketUsers({});
  if (::geteuid() == 0) {
    EXPECT_THAT(users, ElementsAre(0u));
  } else {
    EXPECT_THAT(users, ElementsAre(0u, ::geteuid()));
  }
}

}  // namespace
}  // namespace cnp
