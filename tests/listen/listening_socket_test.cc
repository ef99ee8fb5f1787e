// A TCP --listen whose host resolves to several addresses binds each of them, or none: a port
// another process holds on one address fails the start (a client that resolves the name to
// that address would reach the other process, token and all), an address this host does not
// have is left out, and port 0 is one port for all.
#include "service/listen/listening_socket.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/listen/listen_address.h"

namespace cnp::listen {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

PassiveAddress V4(const char* ip, int port) {
  PassiveAddress a;
  auto* in = reinterpret_cast<sockaddr_in*>(&a.addr);
  in->sin_family = AF_INET;
  in->sin_port = htons(port);
  ::inet_pton(AF_INET, ip, &in->sin_addr);
  a.length = sizeof(sockaddr_in);
  a.family = AF_INET;
  return a;
}

// A socket listening on `ip` (port 0: any), closed with the test.
class HeldPort {
 public:
  explicit HeldPort(const char* ip, int port = 0) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    PassiveAddress a = V4(ip, port);
    bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&a.addr), a.length) == 0 && ::listen(fd_, 4) == 0;
    sockaddr_in got{};
    socklen_t len = sizeof got;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&got), &len);
    port_ = ntohs(got.sin_port);
  }
  ~HeldPort() { ::close(fd_); }
  bool bound() const { return bound_; }
  int port() const { return port_; }

 private:
  int fd_;
  bool bound_ = false;
  int port_ = 0;
};

void CloseAll(const std::vector<ListeningSocket>& sockets) {
  for (const ListeningSocket& s : sockets) ::close(s.fd);
}

TEST(ListenOnEachTest, APortTakenOnOneAddressFailsThemAllAndClosesTheOthers) {
  HeldPort other("127.0.0.2");
  ASSERT_TRUE(other.bound());
  const int port = other.port();
  absl::StatusOr<std::vector<ListeningSocket>> sockets =
      ListenOnEach("name:1", "name", port, {V4("127.0.0.1", port), V4("127.0.0.2", port)});
  ASSERT_FALSE(sockets.ok()) << "listened on 127.0.0.1 alone, leaving 127.0.0.2 to the other process";
  EXPECT_TRUE(absl::IsUnavailable(sockets.status())) << sockets.status();
  EXPECT_THAT(sockets.status().message(), HasSubstr("cannot listen on name:1 (127.0.0.2)"));
  // The socket bound on 127.0.0.1 before the failure was closed: the port is free there.
  HeldPort again("127.0.0.1", port);
  EXPECT_TRUE(again.bound());
}

TEST(ListenOnEachTest, AnAddressThisHostLacksIsLeftOut) {
  // 192.0.2.1 is TEST-NET-1: no interface here has it (EADDRNOTAVAIL).
  absl::StatusOr<std::vector<ListeningSocket>> sockets =
      ListenOnEach("name:0", "name", 0, {V4("192.0.2.1", 0), V4("127.0.0.1", 0)});
  ASSERT_TRUE(sockets.ok()) << sockets.status();
  ASSERT_THAT(*sockets, SizeIs(1));
  EXPECT_TRUE((*sockets)[0].loopback);
  CloseAll(*sockets);
}

TEST(ListenOnEachTest, PortZeroIsOnePortForEveryAddress) {
  absl::StatusOr<std::vector<ListeningSocket>> sockets =
      ListenOnEach("name:0", "name", 0, {V4("127.0.0.1", 0), V4("127.0.0.2", 0)});
  ASSERT_TRUE(sockets.ok()) << sockets.status();
  ASSERT_THAT(*sockets, SizeIs(2));
  EXPECT_NE((*sockets)[0].port, 0);
  EXPECT_EQ((*sockets)[0].port, (*sockets)[1].port);
  CloseAll(*sockets);
}

}  // namespace
}  // namespace cnp::listen
