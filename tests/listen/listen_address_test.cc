// A TCP --listen as the configuration checks it and the listener binds it: one reading of the
// text and one resolver (each calls it; the listener checks again what it bound), so that what
// the loopback check vouched for is what gets bound.
#include "service/listen/listen_address.h"

#include <netinet/in.h>

#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace cnp::listen {
namespace {

int PortOf(const PassiveAddress& a) {
  if (a.family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&a.addr)->sin_port);
  if (a.family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&a.addr)->sin6_port);
  }
  return -1;
}

TEST(ParseTcpListenAddress, ReadsEachSpelling) {
  struct Case {
    const char* text;
    const char* host;
    int port;
  };
  for (const Case& c : {Case{"127.0.0.1:7070", "127.0.0.1", 7070}, Case{":0", "", 0},
                        Case{"[::1]:80", "::1", 80}, Case{"dns:///localhost:9", "localhost", 9},
                        Case{"ipv4:10.0.0.1:1", "10.0.0.1", 1}, Case{"ipv6:[::]:2", "::", 2}}) {
    absl::StatusOr<TcpListenAddress> parsed = ParseTcpListenAddress(c.text);
    ASSERT_TRUE(parsed.ok()) << c.text << ": " << parsed.status();
    EXPECT_EQ(parsed->host, c.host) << c.text;
    EXPECT_EQ(parsed->port, c.port) << c.text;
  }
}

TEST(ParseTcpListenAddress, RefusesWhatItCannotRead) {
  for (const char* text : {"7070", "[::1]80", "host:port", "host:70000", "host:-1"}) {
    absl::StatusOr<TcpListenAddress> parsed = ParseTcpListenAddress(text);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

TEST(ResolveForListening, GivesEveryAddressWithThePort) {
  absl::StatusOr<std::vector<PassiveAddress>> v4 =
      ResolveForListening({.host_port = "127.0.0.1:7071", .host = "127.0.0.1", .port = 7071});
  ASSERT_TRUE(v4.ok()) << v4.status();
  ASSERT_EQ(v4->size(), 1u);
  EXPECT_EQ((*v4)[0].family, AF_INET);
  EXPECT_EQ((*v4)[0].length, sizeof(sockaddr_in));
  EXPECT_EQ(PortOf((*v4)[0]), 7071);

  absl::StatusOr<std::vector<PassiveAddress>> v6 =
      ResolveForListening({.host_port = "[::1]:7072", .host = "::1", .port = 7072});
  ASSERT_TRUE(v6.ok()) << v6.status();
  ASSERT_EQ(v6->size(), 1u);
  EXPECT_EQ((*v6)[0].family, AF_INET6);
  EXPECT_EQ(PortOf((*v6)[0]), 7072);
}

TEST(ListensOnLoopbackOnly, FollowsWhatTheHostResolvesTo) {
  for (const char* loopback : {"127.0.0.1:0", "[::1]:0", "localhost:0", "dns:///127.0.0.2:1"}) {
    absl::StatusOr<bool> only = ListensOnLoopbackOnly(loopback);
    ASSERT_TRUE(only.ok()) << loopback << ": " << only.status();
    EXPECT_TRUE(*only) << loopback;
  }
  // Every address ("" or 0.0.0.0 or ::), whatever the port.
  for (const char* everywhere : {":0", "0.0.0.0:7070", "[::]:7070"}) {
    absl::StatusOr<bool> only = ListensOnLoopbackOnly(everywhere);
    ASSERT_TRUE(only.ok()) << everywhere << ": " << only.status();
    EXPECT_FALSE(*only) << everywhere;
  }
}

}  // namespace
}  // namespace cnp::listen
