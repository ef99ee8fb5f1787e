// Running out of descriptors: a flood of idle connections is capped below the server's
// open-files limit (refusals are logged), a client connected before the flood keeps being
// served, and once the flood is gone new clients are served again - no restart needed.
// The server runs with RLIMIT_NOFILE 256, so a few hundred connections are enough.
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "client/lib/cnp_client.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/security/transport/transport_testing.h"

namespace cnp::security_testing {
namespace {

using ::testing::HasSubstr;

constexpr char kDoc[] = R"({"_id":"a","n":1})";
constexpr rlim_t kServerOpenFiles = 256;
constexpr int kFlood = 600;


// Whether any of `fds` was closed by the server, waiting up to `timeout`.
bool AnyClosedByServer(const std::vector<int>& fds, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<pollfd> polled;
  for (int fd : fds) polled.push_back({.fd = fd, .events = POLLIN, .revents = 0});
  while (absl::Now() < deadline) {
    const int n = ::poll(polled.data(), polled.size(),
                         absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (n <= 0) continue;
    for (pollfd& p : polled) {
      if (p.revents == 0) continue;
      char byte;
      if ((p.revents & (POLLHUP | POLLERR)) != 0 || ::recv(p.fd, &byte, 1, MSG_DONTWAIT) <= 0) {
        return true;
      }
      p.events = 0;  // the server wrote something (HTTP/2 settings): still open
    }
  }
  return false;
}

TEST(ConnectionLimitTest, AFloodIsCappedAndTheServerRecoversWhenItEnds) {
  const std::string dir = ShortTempDir();
  const std::string socket = dir + "/cnp.sock";
  auto server = LaunchServer(
      {.args = {"--listen=unix:" + socket}, .open_files = kServerOpenFiles});
  ASSERT_TRUE(server->ready()) << server->Log();
  auto before = client::Client::Connect("unix:" + socket, absl::Seconds(10));
  ASSERT_TRUE(before.ok()) << before.status();

  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &files);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
  std::vector<int> flood;
  for (int i = 0; i < kFlood; ++i) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      continue;
    }
    flood.push_back(fd);
  }
  ASSERT_GT(flood.size(), kServerOpenFiles);
  // The server closes what it cannot take instead of running out of descriptors.
  EXPECT_TRUE(AnyClosedByServer(flood, absl::Seconds(20)));
  EXPECT_THAT(server->Log(), HasSubstr("too many open connections"));
  // A client that was already connected is still served during the flood.
  auto during = (*before)->Map({"svc_fns.doubled"}, {kDoc});
  EXPECT_TRUE(during.ok()) << during.status();

  for (int fd : flood) ::close(fd);
  grpc::Status after = MapOnANewConnection("unix:" + socket, kDoc, absl::Seconds(20));
  EXPECT_TRUE(after.ok()) << after.error_message() << server->Log();
}

}  // namespace
}  // namespace cnp::security_testing
