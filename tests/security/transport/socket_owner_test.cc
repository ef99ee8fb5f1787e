// A unix socket another user controls is never trusted by the clients (the review's HIGH
// finding): as uid 65534 the reviewer made /tmp/cnp-<uid> (0755) with a listener in it, and
// `cnp upload http://admin:TopSecretPw@...` sent it the CouchDB credentials. Here nobody
// (65534) plays the other user, so the tests need root (they skip without it).
//
// - cnp (upload, map) and cnp-adapter refuse a socket in a directory nobody owns before they
//   connect: the listener there never sees a connection;
// - a real cnp-server whose directory and socket are handed to nobody is refused, and served
//   with --server-user=nobody (cnp, the adapter, the client library);
// - the adapter hands CouchDB's pipes to a direct-session listener only when the process that
//   listens (SO_PEERCRED) is this user, root or the --server-user.
#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/lib/cnp_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/security/transport/transport_testing.h"

namespace cnp::security_testing {
namespace {

using ::cnp::testing::Runfile;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uid_t kNobody = 65534;
constexpr char kMapDoc[] = R"({"_id":"a","n":21})";
constexpr char kSession[] =
    "[\"reset\"]\n[\"add_fun\",\"svc_fns.doubled\"]\n[\"map_doc\",{\"_id\":\"a\",\"n\":21}]\n";

void GiveTo(const std::string& path, uid_t uid) {
  ASSERT_EQ(::lchown(path.c_str(), uid, uid), 0) << path << ": " << std::strerror(errno);
}

sockaddr_un UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  return addr;
}

// What the attacker left: a listening socket, mode 0777, owned by nobody. Non-blocking, so
// that accept() says at once whether anyone connected.
int FakeListener(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un addr = UnixAddress(path);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(::chmod(path.c_str(), 0777), 0);
  GiveTo(path, kNobody);
  EXPECT_EQ(::listen(fd, 16), 0);
  return fd;
}

// Whether a connection is waiting on `listener` (every client has exited by then, so a
// connection it made would be in the backlog).
bool SomeoneConnected(int listener) {
  const int conn = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (conn >= 0) ::close(conn);
  return conn >= 0;
}

class SocketOwnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a directory to another user";
    dir_ = ShortTempDir();
    ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  }
  std::string dir_;
};

TEST_F(SocketOwnerTest, TheReviewersFakeServerGetsNoConnectionAndNoCredentials) {
  const std::string theirs = dir_ + "/cnp-12345";
  ASSERT_EQ(::mkdir(theirs.c_str(), 0755), 0);
  GiveTo(theirs, kNobody);
  const int listener = FakeListener(theirs + "/cnp.sock");
  const std::string target = "--target=unix:" + theirs + "/cnp.sock";
  WriteFile(dir_ + "/design.yml", "towns:\n  views:\n    by_town: svc_fns.doubled\n");

  ProcessResult upload = RunWithInput({Runfile("client/cli/cnp"), "upload", target,
                                       "http://admin:TopSecretPw@localhost:5984", "mydb",
                                       dir_ + "/design.yml"},
                                      "");
  EXPECT_EQ(upload.exit_code, 1) << upload.err;
  EXPECT_THAT(upload.err, AllOf(HasSubstr("the socket directory " + theirs + " belongs to uid "
                                          "65534 (nobody)"),
                                HasSubstr("--server-user=nobody")));
  EXPECT_THAT(upload.err, Not(HasSubstr("TopSecretPw")));
  ProcessResult map = RunWithInput({Runfile("client/cli/cnp"), "map", target, "svc_fns.doubled"},
                                   kMapDoc);
  EXPECT_EQ(map.exit_code, 1);
  EXPECT_THAT(map.err, HasSubstr(theirs + " belongs to uid 65534"));
  for (const char* session : {"--session=auto", "--session=stream", "--session=direct"}) {
    ProcessResult adapter =
        RunWithInput({Runfile("adapter/cnp-adapter"), target, session}, kSession);
    EXPECT_THAT(adapter.out + adapter.err, HasSubstr(theirs + " belongs to uid 65534")) << session;
  }
  EXPECT_FALSE(SomeoneConnected(listener));
  ::close(listener);
}

// The socket checks looked at the text after "unix:", while gRPC percent-decodes it: for
// unix:DIR/x%2F..%2Fcnp-12345/cnp.sock they vouched for a socket in this user's directory named
// "x%2F..%2Fcnp-12345", and gRPC connected to DIR/x/../cnp-12345/cnp.sock, nobody's. A target
// gRPC would read as another file is now refused before anything connects (common/unix_target.h).
TEST_F(SocketOwnerTest, TheChecksLookAtTheFileGrpcConnectsTo) {
  const std::string theirs = dir_ + "/cnp-12345";
  ASSERT_EQ(::mkdir(theirs.c_str(), 0755), 0);
  GiveTo(theirs, kNobody);
  const int listener = FakeListener(theirs + "/cnp.sock");
  ASSERT_EQ(::mkdir((dir_ + "/x").c_str(), 0700), 0);
  const std::string decoy_dir = dir_ + "/x%2F..%2Fcnp-12345";
  ASSERT_EQ(::mkdir(decoy_dir.c_str(), 0700), 0);
  const int decoy = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un decoy_addr = UnixAddress(decoy_dir + "/cnp.sock");
  ASSERT_EQ(::bind(decoy, reinterpret_cast<sockaddr*>(&decoy_addr), sizeof decoy_addr), 0);
  ASSERT_EQ(::listen(decoy, 16), 0);
  const std::string target = "unix:" + decoy_dir + "/cnp.sock";

  auto client = client::Client::Connect(target, client::ChannelSecurity{});
  EXPECT_TRUE(absl::IsInvalidArgument(client.status())) << client.status();
  EXPECT_THAT(client.status().message(), HasSubstr("percent-decoding"));
  ProcessResult map =
      RunWithInput({Runfile("client/cli/cnp"), "map", "--target=" + target, "svc_fns.doubled"},
                   kMapDoc);
  EXPECT_NE(map.exit_code, 0);
  EXPECT_THAT(map.err, HasSubstr("gRPC would read its '%'"));
  for (const char* session : {"--session=auto", "--session=stream", "--session=direct"}) {
    ProcessResult adapter =
        RunWithInput({Runfile("adapter/cnp-adapter"), "--target=" + target, session}, kSession);
    EXPECT_THAT(adapter.out + adapter.err, HasSubstr("gRPC would read its '%'")) << session;
  }
  EXPECT_FALSE(SomeoneConnected(listener));
  ::close(decoy);
  ::close(listener);
}

class HandedOverServerTest : public SocketOwnerTest {
 protected:
  // A real cnp-server whose directory and sockets then change hands to nobody: what a server
  // running as a dedicated user looks like to its clients.
  void SetUp() override {
    SocketOwnerTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    socket_ = dir_ + "/run/cnp.sock";
    server_ = LaunchServer({.args = {"--listen=unix:" + socket_}});
    ASSERT_TRUE(server_->ready()) << server_->Log();
    GiveTo(dir_ + "/run", kNobody);
    GiveTo(socket_, kNobody);
  }
  std::string socket_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(HandedOverServerTest, CnpIsRefusedWithoutTheServerUserAndServedWithIt) {
  ProcessResult refused = RunWithInput(
      {Runfile("client/cli/cnp"), "map", "--target=unix:" + socket_, "svc_fns.doubled"}, kMapDoc);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, AllOf(HasSubstr(dir_ + "/run belongs to uid 65534 (nobody), not to "
                                           "this user (uid 0 (root)) or root"),
                                 HasSubstr("--server-user=nobody")));
  for (const char* user : {"--server-user=nobody", "--server-user=65534"}) {
    ProcessResult served = RunWithInput(
        {Runfile("client/cli/cnp"), "map", "--target=unix:" + socket_, user, "svc_fns.doubled"},
        kMapDoc);
    EXPECT_EQ(served.exit_code, 0) << served.err;
    EXPECT_THAT(served.out, HasSubstr(R"([["a",42]])"));
  }
  ProcessResult unknown = RunWithInput({Runfile("client/cli/cnp"), "map",
                                        "--target=unix:" + socket_,
                                        "--server-user=no-such-user-here", "svc_fns.doubled"},
                                       kMapDoc);
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_THAT(unknown.err, HasSubstr("--server-user: no user named 'no-such-user-here'"));
}

TEST_F(HandedOverServerTest, TheClientLibraryTakesTheServerUserInItsOptions) {
  auto refused = client::Client::Connect("unix:" + socket_, client::ChannelSecurity{});
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  auto served =
      client::Client::Connect("unix:" + socket_, client::ChannelSecurity{.server_user = "nobody"});
  ASSERT_TRUE(served.ok()) << served.status();
  auto rows = (*served)->Map({"svc_fns.doubled"}, {kMapDoc});
  ASSERT_TRUE(rows.ok()) << rows.status();
}

TEST_F(HandedOverServerTest, TheAdapterIsRefusedWithoutTheServerUserAndServedWithIt) {
  for (const char* session : {"--session=stream", "--session=auto"}) {
    ProcessResult refused = RunWithInput(
        {Runfile("adapter/cnp-adapter"), "--target=unix:" + socket_, session}, kSession);
    EXPECT_THAT(refused.out + refused.err,
                AllOf(HasSubstr(dir_ + "/run belongs to uid 65534"),
                      HasSubstr("--server-user=nobody")))
        << session;
    ProcessResult served =
        RunWithInput({Runfile("adapter/cnp-adapter"), "--target=unix:" + socket_, session,
                      "--server-user=nobody"},
                     kSession);
    EXPECT_EQ(served.exit_code, 0) << session << ": " << served.err;
    EXPECT_THAT(served.out, HasSubstr("[[[\"a\",42]]]")) << session << ": " << served.err;
  }
}

// A direct-session socket in a directory this user owns, listened on by a process that runs
// as `uid` (SO_PEERCRED names whoever called listen()). It takes one connection and reports on
// `report` what the first read brought: "bytes=N fds=M".
pid_t DirectListenerAs(uid_t uid, const std::string& path, int* report) {
  int ready[2];
  EXPECT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(ready[0]);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr = UnixAddress(path);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ::_exit(2);
    if (::setgroups(0, nullptr) != 0 || ::setgid(uid) != 0 || ::setuid(uid) != 0) ::_exit(3);
    if (::listen(fd, 4) != 0) ::_exit(4);
    if (::write(ready[1], "r", 1) != 1) ::_exit(5);
    const int conn = ::accept(fd, nullptr, nullptr);
    char data[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(8 * sizeof(int))];
    iovec io{.iov_base = data, .iov_len = sizeof data};
    msghdr message{};
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    const ssize_t got = ::recvmsg(conn, &message, 0);
    int fds = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        fds += static_cast<int>((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      }
    }
    char line[64];
    const int n = std::snprintf(line, sizeof line, "bytes=%zd fds=%d", got, fds);
    if (::write(ready[1], line, n) != n) ::_exit(6);
    ::_exit(0);
  }
  ::close(ready[1]);
  char byte = 0;
  EXPECT_EQ(::read(ready[0], &byte, 1), 1) << "the listener did not start";
  *report = ready[0];
  return pid;
}

// The listener's report, once the adapter has exited. A connection of our own first, so that a
// listener the adapter never connected to stops waiting in accept() (and reports nothing
// received) instead of hanging the test.
std::string ReadReport(int report, const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr = UnixAddress(path);
  ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);  // refused once it has exited
  ::close(fd);
  std::string text;
  char buffer[64];
  ssize_t n = 0;
  while ((n = ::read(report, buffer, sizeof buffer)) > 0) text.append(buffer, n);
  ::close(report);
  return text;
}

TEST_F(SocketOwnerTest, CouchDbsPipesGoOnlyToADirectSessionServerOfATrustedUser) {
  const std::string target = "--target=unix:" + dir_ + "/cnp.sock";
  int report = -1;
  pid_t listener = DirectListenerAs(kNobody, dir_ + "/cnp.sock.direct", &report);
  ProcessResult refused = RunWithInput(
      {Runfile("adapter/cnp-adapter"), target, "--session=direct"}, "[\"reset\"]\n");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, AllOf(HasSubstr(dir_ + "/cnp.sock.direct runs as uid 65534 (nobody)"),
                                 HasSubstr("--server-user=nobody")));
  // The adapter connected (to learn who listens) and hung up, sending nothing.
  EXPECT_EQ(ReadReport(report, dir_ + "/cnp.sock.direct"), "bytes=0 fds=0");
  EXPECT_EQ(::cnp::testing::ExitCode(::cnp::testing::WaitForExit(listener)), 0);

  ASSERT_EQ(::unlink((dir_ + "/cnp.sock.direct").c_str()), 0);
  listener = DirectListenerAs(kNobody, dir_ + "/cnp.sock.direct", &report);
  ProcessResult handed = RunWithInput(
      {Runfile("adapter/cnp-adapter"), target, "--session=direct", "--server-user=nobody"},
      "[\"reset\"]\n");
  // The listener got the offer with CouchDB's two pipes (then hung up: no real server).
  EXPECT_THAT(ReadReport(report, dir_ + "/cnp.sock.direct"),
              AllOf(Not(HasSubstr("bytes=0 ")), HasSubstr("fds=2")));
  EXPECT_EQ(::cnp::testing::ExitCode(::cnp::testing::WaitForExit(listener)), 0);
  EXPECT_EQ(handed.exit_code, 1);
}

}  // namespace
}  // namespace cnp::security_testing
