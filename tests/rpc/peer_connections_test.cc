// What a TCP peer's connections are counted under (--max-connections-per-peer): an IPv4
// address, an IPv6 address's /64.
#include "service/rpc/peer_connections.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <string>

#include "gtest/gtest.h"

namespace cnp::rpc {
namespace {

sockaddr_storage Ipv6(const char* text, uint32_t scope = 0) {
  sockaddr_storage storage{};
  auto& in6 = reinterpret_cast<sockaddr_in6&>(storage);
  in6.sin6_family = AF_INET6;
  in6.sin6_scope_id = scope;
  EXPECT_EQ(::inet_pton(AF_INET6, text, &in6.sin6_addr), 1) << text;
  return storage;
}

sockaddr_storage Ipv4(const char* text) {
  sockaddr_storage storage{};
  auto& in = reinterpret_cast<sockaddr_in&>(storage);
  in.sin_family = AF_INET;
  EXPECT_EQ(::inet_pton(AF_INET, text, &in.sin_addr), 1) << text;
  return storage;
}

// Found by a security review: a host is given a whole IPv6 /64 and may connect from a new
// address each time; counted by address, it could hold every connection the server has.
TEST(PeerCountKeyTest, IPv6AddressesOfOneSlash64AreOnePeer) {
  EXPECT_EQ(PeerCountKey(Ipv6("2001:db8:1:2::7")), "ipv6:2001:db8:1:2::/64");
  EXPECT_EQ(PeerCountKey(Ipv6("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), "ipv6:2001:db8:1:2::/64");
  EXPECT_EQ(PeerCountKey(Ipv6("2001:db8:1:3::7")), "ipv6:2001:db8:1:3::/64");
  EXPECT_EQ(PeerCountKey(Ipv6("::1")), "ipv6:::/64");
  EXPECT_EQ(PeerCountKey(Ipv6("fe80::1", 2)), "ipv6:fe80::%2/64");
}

TEST(PeerCountKeyTest, AnIPv4PeerIsItsAddressHoweverItCame) {
  EXPECT_EQ(PeerCountKey(Ipv4("192.0.2.7")), "ipv4:192.0.2.7");
  EXPECT_EQ(PeerCountKey(Ipv4("192.0.2.8")), "ipv4:192.0.2.8");
  EXPECT_EQ(PeerCountKey(Ipv6("::ffff:192.0.2.7")), "ipv4:192.0.2.7");
}

// Found by a review: refusals (the descriptor cap, the HTTP/2 guard, --first-call-timeout, a
// refused token) were logged under the whole IPv6 address, so a host with a /64 had a line
// logged for each connection made from an address of its own.
TEST(PeerCountKeyOfUriTest, GrpcsPeerNamesGiveTheKeyTheirConnectionsAreCountedUnder) {
  EXPECT_EQ(PeerCountKeyOfUri("ipv4:192.0.2.7:5000"), "ipv4:192.0.2.7");
  EXPECT_EQ(PeerCountKeyOfUri("ipv6:%5B2001:db8:1:2::7%5D:5000"), "ipv6:2001:db8:1:2::/64");
  EXPECT_EQ(PeerCountKeyOfUri("ipv6:%5B2001:db8:1:2:aaaa::1%5D:6000"), "ipv6:2001:db8:1:2::/64");
  EXPECT_EQ(PeerCountKeyOfUri("ipv6:[2001:db8:1:3::7]:5000"), "ipv6:2001:db8:1:3::/64");
  EXPECT_EQ(PeerCountKeyOfUri("ipv6:%5Bfe80::1%252%5D:5000"), "ipv6:fe80::%2/64");
  EXPECT_EQ(PeerCountKeyOfUri("ipv6:%5B::ffff:192.0.2.7%5D:5000"), "ipv4:192.0.2.7");
  // Not an IP peer: itself, without a port.
  EXPECT_EQ(PeerCountKeyOfUri("unix:/run/cnp.sock"), "unix");
  EXPECT_EQ(PeerCountKeyOfUri("ipv4:not-an-address:1"), "ipv4:not-an-address");
}

TEST(Ipv4PeerNameTest, NamesIPv4PeersHoweverTheyCameAndNothingElse) {
  EXPECT_EQ(Ipv4PeerName(Ipv4("192.0.2.7")), "ipv4:192.0.2.7");
  EXPECT_EQ(Ipv4PeerName(Ipv6("::ffff:192.0.2.7")), "ipv4:192.0.2.7");
  EXPECT_EQ(Ipv4PeerName(Ipv6("2001:db8::7")), "");
}

TEST(PeerConnectionsTest, APeerPastItsLimitIsRefusedAndAnotherIsNot) {
  PeerConnections connections(1);
  int first[2], second[2];
  ASSERT_EQ(::pipe(first), 0);
  ASSERT_EQ(::pipe(second), 0);
  EXPECT_TRUE(connections.Admit("ipv6:2001:db8:1:2::/64", first[0]));
  EXPECT_FALSE(connections.Admit("ipv6:2001:db8:1:2::/64", second[0]));
  EXPECT_TRUE(connections.Admit("ipv6:2001:db8:1:3::/64", second[0]));
  // Its connection closed, the peer may connect again.
  ::close(first[0]);
  EXPECT_TRUE(connections.Admit("ipv6:2001:db8:1:2::/64", first[1]));
  ::close(first[1]);
  ::close(second[0]);
  ::close(second[1]);
}

}  // namespace
}  // namespace cnp::rpc
