// TCP peers cannot lock the server's other clients out (README "Security"):
// - idle TCP connections that take every connection TCP may have leave room for unix-socket
//   clients (CouchDB's adapters), which still get in and are served;
// - one address may have only --max-connections-per-peer connections open, its refusals
//   logged once, not once per connection, and it may connect again once some close;
// - a TCP connection that makes no call soon after connecting is closed
//   (--first-call-timeout), one that made a call is not;
// - a connection with no call open for --max-connection-idle is closed (gRPC's GOAWAY), and
//   its client connects again at its next call;
// - a loopback TCP listener without a token warns that every local user can call.
// The server runs with RLIMIT_NOFILE 256, so a few hundred connections are enough.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/lib/cnp_client.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/security/transport/transport_testing.h"

namespace cnp::security_testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kDoc[] = R"({"_id":"a","n":1})";
constexpr rlim_t kServerOpenFiles = 256;

void RaiseOwnOpenFilesLimit() {
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &files);
}

// A TCP connection to the loopback address (127.0.0.1, or ::1 for AF_INET6) at `port` that
// sends the HTTP/2 client preface and an empty SETTINGS frame, as a gRPC client would, and
// then nothing. -1 if it could not connect.
int IdleHttp2Connection(int port, int family = AF_INET) {
  const int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const timeval five_seconds{.tv_sec = 5, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &five_seconds, sizeof five_seconds);
  sockaddr_storage storage{};
  socklen_t len = 0;
  if (family == AF_INET6) {
    auto* addr = reinterpret_cast<sockaddr_in6*>(&storage);
    addr->sin6_family = AF_INET6;
    addr->sin6_port = htons(static_cast<uint16_t>(port));
    addr->sin6_addr = in6addr_loopback;
    len = sizeof *addr;
  } else {
    auto* addr = reinterpret_cast<sockaddr_in*>(&storage);
    addr->sin_family = AF_INET;
    addr->sin_port = htons(static_cast<uint16_t>(port));
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof *addr;
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&storage), len) != 0) {
    ::close(fd);
    return -1;
  }
  static const char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
  (void)!::send(fd, kPreface, sizeof kPreface - 1, MSG_NOSIGNAL);
  return fd;
}

// Whether this machine has IPv6 loopback (::1) to listen on.
bool HasIpv6Loopback() {
  const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return bound;
}

int LocalPort(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                                    : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

enum class Fate { kServed, kClosed, kUndecided };

// Whether the server took connection `fd` (it sends its HTTP/2 SETTINGS) or closed it,
// waiting up to `timeout` for one or the other.
Fate FateOf(int fd, absl::Duration timeout) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) <= 0) {
    return Fate::kUndecided;
  }
  char byte;
  return ::recv(fd, &byte, 1, MSG_DONTWAIT) > 0 ? Fate::kServed : Fate::kClosed;
}

// Whether the server closes `fd` within `timeout` (data it sends before is read and dropped).
bool ClosedByServer(int fd, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  char buffer[4096];
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
    if (::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT) <= 0) return true;
  }
}


int CountLines(const std::string& log, const std::string& needle) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) n += absl::StrContains(line, needle);
  return n;
}

TEST(ConnectionReserveTest, UnixClientsAreServedWhileTcpPeersHoldEveryConnectionTheyMay) {
  const std::string socket = ShortTempDir() + "/cnp.sock";
  // The server's defaults but for the open-files limit: a per-peer limit above the cap.
  auto server = LaunchServer({.args = {"--listen=unix:" + socket, "--listen=127.0.0.1:0"},
                              .open_files = kServerOpenFiles});
  ASSERT_TRUE(server->ready()) << server->Log();
  const int port = server->Port();
  ASSERT_GT(port, 0) << server->Log();

  RaiseOwnOpenFilesLimit();
  std::vector<int> flood;
  // Idle TCP connections until the server closes one at once: TCP has all it may have.
  bool capped = false;
  for (int i = 0; i < 2 * static_cast<int>(kServerOpenFiles) && !capped; ++i) {
    const int fd = IdleHttp2Connection(port);
    ASSERT_GE(fd, 0) << "connection " << i;
    flood.push_back(fd);
    capped = FateOf(fd, absl::Seconds(10)) == Fate::kClosed;
  }
  ASSERT_TRUE(capped) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("too many open connections"));

  // A unix-socket client connecting now still gets in.
  grpc::Status unix_call = MapOnANewConnection("unix:" + socket, kDoc, absl::Seconds(20));
  EXPECT_TRUE(unix_call.ok()) << unix_call.error_message() << server->Log();
  // And TCP stays refused while the flood holds its connections.
  const int another = IdleHttp2Connection(port);
  EXPECT_EQ(FateOf(another, absl::Seconds(10)), Fate::kClosed);
  ::close(another);
  for (int fd : flood) ::close(fd);
}

TEST(ConnectionReserveTest, OneAddressHasAtMostMaxConnectionsPerPeerOpen) {
  constexpr int kLimit = 4;
  constexpr int kTries = 20;
  auto server = LaunchServer({.args = {"--listen=127.0.0.1:0",
                                       absl::StrCat("--max-connections-per-peer=", kLimit)}});
  ASSERT_TRUE(server->ready()) << server->Log();
  const int port = server->Port();

  std::vector<int> served;
  int closed = 0;
  for (int i = 0; i < kTries; ++i) {
    const int fd = IdleHttp2Connection(port);
    ASSERT_GE(fd, 0);
    switch (FateOf(fd, absl::Seconds(10))) {
      case Fate::kServed: served.push_back(fd); break;
      case Fate::kClosed: ++closed; ::close(fd); break;
      case Fate::kUndecided: FAIL() << "connection " << i << " neither served nor closed";
    }
  }
  EXPECT_EQ(served.size(), kLimit);
  EXPECT_EQ(closed, kTries - kLimit);
  // One access-log line for the address, not one per connection.
  ASSERT_TRUE(server->WaitForLog("--max-connections-per-peer", absl::Seconds(5)));
  EXPECT_EQ(CountLines(server->Log(), "--max-connections-per-peer"), 1) << server->Log();

  // The limit counts open connections: once these end, the address connects again.
  for (int fd : served) {
    ::shutdown(fd, SHUT_WR);
    EXPECT_TRUE(ClosedByServer(fd, absl::Seconds(10)));
    ::close(fd);
  }
  // gRPC closes its descriptor a moment after it has closed the connection, so a connection
  // made in that moment may still be refused: a bounded number of tries.
  std::vector<int> again;
  for (int i = 0; i < 50 && static_cast<int>(again.size()) < kLimit; ++i) {
    const int fd = IdleHttp2Connection(port);
    ASSERT_GE(fd, 0);
    if (FateOf(fd, absl::Seconds(10)) == Fate::kServed) {
      again.push_back(fd);
    } else {
      ::close(fd);
    }
  }
  EXPECT_EQ(again.size(), kLimit) << server->Log();
  for (int fd : again) ::close(fd);
}

TEST(ConnectionReserveTest, AConnectionThatMakesNoCallSoonIsClosed) {
  auto server = LaunchServer({.args = {"--listen=127.0.0.1:0", "--first-call-timeout=1s"}});
  ASSERT_TRUE(server->ready()) << server->Log();
  const std::string target = absl::StrCat("127.0.0.1:", server->Port());
  // A client that calls at once, before the idle connection is made.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  auto stub = v1::Functions::NewStub(channel);
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    v1::MapRequest request;
    request.add_functions("svc_fns.doubled");
    request.add_docs(kDoc);
    v1::MapResponse response;
    grpc::Status status = stub->Map(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  const int idle = IdleHttp2Connection(server->Port());
  ASSERT_GE(idle, 0);
  EXPECT_TRUE(ClosedByServer(idle, absl::Seconds(20))) << server->Log();
  // The first connection closed for it is the idle one (closings from one address are
  // logged once per interval, so had the calling client's been closed first - it connected
  // earlier - this line would name its port).
  const std::string line =
      absl::StrCat("closed peer=ipv4:127.0.0.1:", LocalPort(idle), " reason=\"no call admitted");
  EXPECT_TRUE(server->WaitForLog(line, absl::Seconds(5))) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("--first-call-timeout"));
  ::close(idle);
}

// gRPC names an IPv6 peer as a URI (`ipv6:%5B::1%5D:port`): a connection that made its call
// over IPv6 must be recognised as the one that did, and stay open past the timeout.
TEST(ConnectionReserveTest, AnIpv6ConnectionThatMadeACallStaysOpen) {
  if (!HasIpv6Loopback()) GTEST_SKIP() << "no IPv6 loopback (::1) on this machine";
  auto server = LaunchServer({.args = {"--listen=[::1]:0", "--first-call-timeout=1s"}});
  ASSERT_TRUE(server->ready()) << server->Log();
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto channel = grpc::CreateCustomChannel(absl::StrCat("ipv6:[::1]:", server->Port()),
                                           grpc::InsecureChannelCredentials(), args);
  auto stub = v1::Functions::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto stream = stub->MapStream(&context);
  v1::MapRequest request;
  request.add_functions("svc_fns.doubled");
  request.add_docs(kDoc);
  v1::MapResponse response;
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&response)) << stream->Finish().error_message();

  // Connected after the stream's connection, so closed after that one's timeout: once it is
  // closed, the stream's connection has been looked at too.
  const int idle = IdleHttp2Connection(server->Port(), AF_INET6);
  ASSERT_GE(idle, 0);
  EXPECT_TRUE(ClosedByServer(idle, absl::Seconds(20))) << server->Log();
  EXPECT_TRUE(server->WaitForLog(
      absl::StrCat("closed peer=ipv6:%5B::1%5D:", LocalPort(idle), " reason=\"no call admitted"),
      absl::Seconds(5)))
      << server->Log();

  // The stream's connection is still there, and the stream with it.
  ASSERT_TRUE(stream->Write(request)) << server->Log();
  ASSERT_TRUE(stream->Read(&response)) << stream->Finish().error_message() << server->Log();
  EXPECT_EQ(response.results(0).rows(), R"([[["a",2]]])");
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  ::close(idle);
}

TEST(ConnectionReserveTest, AConnectionWithNoCallOpenIsClosedAfterMaxConnectionIdle) {
  const std::string socket = ShortTempDir() + "/cnp.sock";
  auto server = LaunchServer({.args = {"--listen=unix:" + socket, "--max-connection-idle=1s"}});
  ASSERT_TRUE(server->ready()) << server->Log();
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto channel =
      grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args);
  auto stub = v1::Functions::NewStub(channel);
  auto map = [&stub] {
    grpc::ClientContext context;
    context.set_wait_for_ready(true);
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    v1::MapRequest request;
    request.add_functions("svc_fns.doubled");
    request.add_docs(kDoc);
    v1::MapResponse response;
    return stub->Map(&context, request, &response);
  };
  grpc::Status first = map();
  ASSERT_TRUE(first.ok()) << first.error_message();
  ASSERT_EQ(channel->GetState(false), GRPC_CHANNEL_READY);
  // The server's GOAWAY, once the connection has had no call for a second, takes the channel
  // out of READY.
  EXPECT_TRUE(channel->WaitForStateChange(GRPC_CHANNEL_READY,
                                          absl::ToChronoTime(absl::Now() + absl::Seconds(20))));
  EXPECT_NE(channel->GetState(false), GRPC_CHANNEL_READY);
  // And the client's next call connects again.
  grpc::Status again = map();
  EXPECT_TRUE(again.ok()) << again.error_message();
}

TEST(ConnectionReserveTest, ALoopbackListenerWithoutATokenWarns) {
  constexpr char kWarning[] = "every local user of this host";
  auto open = LaunchServer({.args = {"--listen=127.0.0.1:0"}});
  ASSERT_TRUE(open->ready()) << open->Log();
  EXPECT_THAT(open->Log(), HasSubstr(kWarning));

  const std::string dir = ShortTempDir();
  WriteFile(dir + "/token", "s3cret-token-f0r-reserve\n");
  auto with_token = LaunchServer(
      {.args = {"--listen=127.0.0.1:0", "--auth-token-file=" + dir + "/token"}});
  ASSERT_TRUE(with_token->ready()) << with_token->Log();
  EXPECT_THAT(with_token->Log(), Not(HasSubstr(kWarning)));
}

// An operator who set a token on a server with unix listeners only would believe its callers
// show it; they are never asked (flags probe: it was accepted without a word).
TEST(ConnectionReserveTest, TcpOnlySettingsOnAServerWithoutTcpWarn) {
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/token", "s3cret-token-f0r-reserve\n");
  const std::vector<std::string> tcp_only = {"--auth-token-file=" + dir + "/token",
                                             "--first-call-timeout=5s", "--metrics-public"};
  absl::StatusOr<Certificates> certificates = MakeCertificates();
  ASSERT_TRUE(certificates.ok()) << certificates.status();
  std::vector<std::string> on_unix = tcp_only;
  on_unix.push_back("--listen=unix:" + dir + "/cnp.sock");
  on_unix.push_back("--tls-cert=" + certificates->server_cert);
  on_unix.push_back("--tls-key=" + certificates->server_key);
  auto unix_only = LaunchServer({.args = on_unix});
  ASSERT_TRUE(unix_only->ready()) << unix_only->Log();
  EXPECT_THAT(unix_only->Log(), HasSubstr("--tls-cert, --tls-key and --tls-client-ca are set, but "
                                          "every listener is a unix socket"));
  // And nothing about a certificate no listener serves (a review: "expires in 23h59m").
  EXPECT_THAT(unix_only->Log(), Not(HasSubstr("the TLS certificate served")));
  EXPECT_THAT(unix_only->Log(), HasSubstr("--auth-token-file is set, but every listener is a "
                                          "unix socket"));
  EXPECT_THAT(unix_only->Log(), HasSubstr("--first-call-timeout is set, but every listener"));
  EXPECT_THAT(unix_only->Log(), HasSubstr("--metrics-public is set, but there is no "
                                          "--metrics-listen"));

  auto on_tcp = LaunchServer({.args = {"--listen=127.0.0.1:0", tcp_only[0], tcp_only[1]}});
  ASSERT_TRUE(on_tcp->ready()) << on_tcp->Log();
  EXPECT_THAT(on_tcp->Log(), Not(HasSubstr("every listener is a unix socket")));
}

}  // namespace
}  // namespace cnp::security_testing
