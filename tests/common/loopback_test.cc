// The one loopback rule (common/loopback.h): every spelling of a loopback address or of
// localhost is loopback, and nothing that only looks like one is.
#include "common/loopback.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include "gtest/gtest.h"

namespace cnp {
namespace {

TEST(IsLoopbackHost, EverySpellingOfLoopbackIs) {
  for (const char* host :
       {"127.0.0.1", "127.1.2.3", "127.255.255.255", "::1", "[::1]", "[0:0:0:0:0:0:0:1]",
        "::ffff:127.0.0.1", "[::ffff:127.0.0.1]", "[::FFFF:127.9.9.9]", "[::ffff:7f00:1]",
        "localhost", "LOCALHOST", "LocalHost"}) {
    EXPECT_TRUE(IsLoopbackHost(host)) << host;
  }
}

TEST(IsLoopbackHost, LookAlikesAreNot) {
  for (const char* host :
       {"127.0.0.1.evil.com", "localhost.evil.com", "evil-localhost", "::ffff:10.0.0.1",
        "[::ffff:10.0.0.1]", "0.0.0.0", "::", "[::]", "::2", "128.0.0.1", "10.127.0.1",
        "126.255.255.255",
        // IPv4-compatible (deprecated): Linux does not route it to loopback.
        "::127.0.0.1",
        // A zone id, or an address inet_pton does not read (what a resolver would make of
        // these is its business, not a number this rule can vouch for).
        "[::1%lo]", "127.1", "0x7f.0.0.1", "2130706433", "127.0.0.01",
        // A bracket is IPv6 only, as in a URL; brackets must be whole.
        "[127.0.0.1]", "[::1", "::1]",
        // Names DNS may answer: an absolute name, and subdomains of localhost.
        "localhost.", "LOCALHOST.", "a.localhost", "localhost.localdomain",
        " 127.0.0.1", "127.0.0.1 ", "", "[]"}) {
    EXPECT_FALSE(IsLoopbackHost(host)) << host;
  }
}

TEST(IsLoopbackAddress, ReadsBothFamiliesAndNothingElse) {
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  ASSERT_EQ(::inet_pton(AF_INET, "127.3.2.1", &v4.sin_addr), 1);
  EXPECT_TRUE(IsLoopbackAddress(reinterpret_cast<sockaddr*>(&v4)));
  ASSERT_EQ(::inet_pton(AF_INET, "0.0.0.0", &v4.sin_addr), 1);
  EXPECT_FALSE(IsLoopbackAddress(reinterpret_cast<sockaddr*>(&v4)));

  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  for (const char* loopback : {"::1", "::ffff:127.0.0.1"}) {
    ASSERT_EQ(::inet_pton(AF_INET6, loopback, &v6.sin6_addr), 1);
    EXPECT_TRUE(IsLoopbackAddress(reinterpret_cast<sockaddr*>(&v6))) << loopback;
  }
  for (const char* other : {"::", "::ffff:10.0.0.1", "fd00::1"}) {
    ASSERT_EQ(::inet_pton(AF_INET6, other, &v6.sin6_addr), 1);
    EXPECT_FALSE(IsLoopbackAddress(reinterpret_cast<sockaddr*>(&v6))) << other;
  }

  sockaddr_un unix_address{};
  unix_address.sun_family = AF_UNIX;
  EXPECT_FALSE(IsLoopbackAddress(reinterpret_cast<sockaddr*>(&unix_address)));
}

}  // namespace
}  // namespace cnp
