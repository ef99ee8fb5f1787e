// Unix sockets: private whatever the umask, group-shared only when asked, in a directory no one
// else controls; the peer's uid is checked on every connection; a second server never takes
// over (or removes) a live server's socket, while a stale one is replaced.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/lib/cnp_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/security/transport/transport_testing.h"
#include "tests/support/runfiles.h"

namespace cnp::security_testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr char kDoc[] = R"({"_id":"a","n":1})";

struct stat Stat(const std::string& path) {
  struct stat st {};
  ::lstat(path.c_str(), &st);
  return st;
}

bool Answers(const std::string& target) {
  auto client = client::Client::Connect(target, absl::Seconds(10));
  return client.ok() && (*client)->Map({"svc_fns.doubled"}, {kDoc}).ok();
}

int ConnectUnix(const std::string& path, bool nonblocking) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST(UnixSocketTest, TheSocketIsPrivateEvenUnderUmask000) {
  const std::string dir = ShortTempDir();
  const std::string socket = dir + "/run/cnp.sock";
  auto server = LaunchServer({.args = {"--listen=unix:" + socket}, .umask = 0});
  ASSERT_TRUE(server->ready()) << server->Log();
  EXPECT_EQ(Stat(socket).st_mode & 07777, 0600);
  EXPECT_EQ(Stat(dir + "/run").st_mode & 07777, 0700);
  EXPECT_TRUE(Answers("unix:" + socket));
}

TEST(UnixSocketTest, ASocketGroupGetsReadAndWriteAndNothingMore) {
  const std::string dir = ShortTempDir();
  const std::string socket = dir + "/run/cnp.sock";
  auto server = LaunchServer(
      {.args = {"--listen=unix:" + socket, absl::StrCat("--socket-group=", kNogroup)},
       .umask = 0});
  ASSERT_TRUE(server->ready()) << server->Log();
  EXPECT_EQ(Stat(socket).st_mode & 07777, 0660);
  EXPECT_EQ(Stat(socket).st_gid, kNogroup);
  EXPECT_EQ(Stat(dir + "/run").st_mode & 07777, 0750);
  EXPECT_EQ(Stat(dir + "/run").st_gid, kNogroup);
}

// A directory that exists keeps its mode: a 0700 one left the group's 0660 sockets out of its
// members' reach, and nothing said so.
// A group the server's user is not in: chown(2) refused it when the socket was made, after
// every worker had started, with exit 1, which systemd's unit restarts every second (config
// review finding). It is now a setting's mistake, found first. `nobody` plays the user; the
// binary is copied where that user may run it.
TEST(UnixSocketTest, AGroupTheServersUserIsNotInIsRefusedAtOnce) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run the server as another user";
  const std::string dir = ShortTempDir();
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  const std::string server = dir + "/cnp-server";
  const ProcessResult copied = RunWithInput({"cp", cnp::testing::Runfile("service/cnp-server"), server}, "");
  ASSERT_EQ(copied.exit_code, 0) << copied.err;
  ASSERT_EQ(::chmod(server.c_str(), 0755), 0);
  // The socket's directory is that user's: one it does not own is refused before the workers.
  const std::string own = dir + "/own";
  ASSERT_EQ(::mkdir(own.c_str(), 0700), 0);
  ASSERT_EQ(::chown(own.c_str(), 65534, 65534), 0);
  const std::vector<std::string> as_nobody = {"setpriv", "--reuid=65534", "--regid=65534",
                                              "--clear-groups", server,
                                              "--listen=unix:" + own + "/cnp.sock",
                                              "--worker-binary=/bin/false"};
  std::vector<std::string> root_group = as_nobody;
  root_group.push_back("--socket-group=0");
  const ProcessResult refused = RunWithInput(root_group, "");
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_THAT(refused.err, HasSubstr("--socket-group: cnp-server runs as uid 65534, which is not "
                                     "in group '0' (gid 0)"));
  EXPECT_THAT(refused.err, Not(HasSubstr("starting")));
  // Its own group passes the setting, and the server goes on to start its workers.
  std::vector<std::string> own_group = as_nobody;
  own_group.push_back("--socket-group=65534");
  const ProcessResult passed = RunWithInput(own_group, "");
  EXPECT_THAT(passed.err, Not(HasSubstr("--socket-group"))) << passed.err;
  EXPECT_THAT(passed.err, HasSubstr("starting"));
}

TEST(UnixSocketTest, ASocketGroupThatCannotSearchAnExistingDirectoryIsWarnedAbout) {
  const std::string dir = ShortTempDir();
  const std::string closed = dir + "/closed";
  ASSERT_EQ(::mkdir(closed.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(closed.c_str(), 0700), 0);
  auto server = LaunchServer({.args = {"--listen=unix:" + closed + "/cnp.sock",
                                       absl::StrCat("--socket-group=", kNogroup)}});
  ASSERT_TRUE(server->ready()) << server->Log();
  EXPECT_THAT(server->Log(),
              AllOf(HasSubstr(absl::StrCat("group ", kNogroup, " (--socket-group) cannot reach ",
                                           closed, "/cnp.sock")),
                    HasSubstr(absl::StrCat(closed, " has mode 0700"))))
      << server->Log();

  // The group's search permission, or everyone's, is enough: no warning.
  for (const auto& [name, mode, gid] : {std::tuple{"group", 0750, kNogroup},
                                        std::tuple{"others", 0711, ::getegid()}}) {
    const std::string open = absl::StrCat(dir, "/", name);
    ASSERT_EQ(::mkdir(open.c_str(), mode), 0);
    ASSERT_EQ(::chmod(open.c_str(), mode), 0);
    ASSERT_EQ(::chown(open.c_str(), -1, gid), 0);
    auto reachable = LaunchServer({.args = {"--listen=unix:" + open + "/cnp.sock",
                                            absl::StrCat("--socket-group=", kNogroup)}});
    ASSERT_TRUE(reachable->ready()) << reachable->Log();
    EXPECT_THAT(reachable->Log(), ::testing::Not(HasSubstr("cannot reach"))) << name;
  }
}

TEST(UnixSocketTest, ADirectoryAnotherUserOwnsOrOthersMayWriteIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a directory to another user";
  const std::string dir = ShortTempDir();
  ASSERT_EQ(::mkdir((dir + "/theirs").c_str(), 0777), 0);
  ASSERT_EQ(::chmod((dir + "/theirs").c_str(), 0777), 0);
  ASSERT_EQ(::chown((dir + "/theirs").c_str(), kNobody, kNogroup), 0);
  auto theirs = LaunchServer({.args = {"--listen=unix:" + dir + "/theirs/cnp.sock"}});
  ASSERT_FALSE(theirs->ready());
  // A setting to fix, found before any worker started (it was exit 1, after them, which the
  // unit restarted every second).
  EXPECT_EQ(theirs->ExitCode(), 2);
  EXPECT_THAT(theirs->Log(), Not(HasSubstr("worker")));
  EXPECT_THAT(theirs->Log(), AllOf(HasSubstr(dir + "/theirs belongs to uid 65534"),
                                   HasSubstr("could replace the socket")));
  EXPECT_NE(Stat(dir + "/theirs/cnp.sock").st_mode & S_IFMT, S_IFSOCK);

  ASSERT_EQ(::mkdir((dir + "/open").c_str(), 0777), 0);
  ASSERT_EQ(::chmod((dir + "/open").c_str(), 0777), 0);
  auto open = LaunchServer({.args = {"--listen=unix:" + dir + "/open/cnp.sock"}});
  ASSERT_FALSE(open->ready());
  EXPECT_THAT(open->Log(), HasSubstr(dir + "/open has mode 0777"));

  // Clients refuse such a directory too, before sending anything.
  auto client = client::Client::Connect("unix:" + dir + "/theirs/cnp.sock", absl::Seconds(1));
  EXPECT_EQ(client.status().code(), absl::StatusCode::kFailedPrecondition);
}

// A child process that connects as `uid` and speaks the first bytes of HTTP/2: it exits 0 if
// the server answered, 1 if the connection was closed on it, 2 if it could not connect.
pid_t ConnectAs(uid_t uid, gid_t gid, const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  static constexpr char kPreface[] =
      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) ::_exit(3);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ::_exit(2);
  // The server may have closed the connection already: no SIGPIPE, just "closed".
  if (::send(fd, kPreface, sizeof kPreface - 1, MSG_NOSIGNAL) < 0) ::_exit(1);
  char reply[64];
  ::_exit(::read(fd, reply, sizeof reply) > 0 ? 0 : 1);
}

int ExitCodeOf(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(UnixSocketTest, PeersWhoseUidIsNotAllowedAreRefusedAndLogged) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another user";
  const std::string dir = ShortTempDir();
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);  // nobody may reach the socket's directory
  const std::string socket = dir + "/run/cnp.sock";
  auto server = LaunchServer(
      {.args = {"--listen=unix:" + socket, absl::StrCat("--socket-group=", kNogroup)}});
  ASSERT_TRUE(server->ready()) << server->Log();
  EXPECT_EQ(ExitCodeOf(ConnectAs(kNobody, kNogroup, socket)), 1);
  EXPECT_THAT(server->Log(),
              AllOf(HasSubstr(absl::StrCat("refused peer=unix:", socket, " peer_uid=65534 peer_pid=")),
                    HasSubstr("uid not allowed")));
  // The server's own user is still served.
  EXPECT_TRUE(Answers("unix:" + socket));

  const std::string other = dir + "/run2/cnp.sock";
  auto allowing = LaunchServer(
      {.args = {"--listen=unix:" + other, absl::StrCat("--socket-group=", kNogroup),
                "--allow-uid=nobody"}});
  ASSERT_TRUE(allowing->ready()) << allowing->Log();
  EXPECT_EQ(ExitCodeOf(ConnectAs(kNobody, kNogroup, other)), 0);

  // And the refused user is told so, not that no server runs (which would have them start a
  // second one). cnp is copied where nobody may run it (the runfiles are under /root).
  const std::string cnp = dir + "/cnp";
  WriteFile(cnp, ::cnp::testing::ReadFile(::cnp::testing::Runfile("client/cli/cnp")), 0755);
  ProcessResult refused = RunWithInput(
      {"/usr/sbin/runuser", "-u", "nobody", "--", cnp, "resolve", "--target=unix:" + socket, "m.f"}, "",
      ::cnp::testing::Output::kTogether);
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_THAT(refused.out, AllOf(HasSubstr("closed this one at once"),
                                 HasSubstr("does not allow this user (uid 65534"),
                                 HasSubstr("--allow-uid")));
  EXPECT_THAT(refused.out, ::testing::Not(HasSubstr("no cnp-server answers")));
}

TEST(UnixSocketTest, ASecondServerLeavesTheFirstServing) {
  const std::string dir = ShortTempDir();
  const std::string socket = dir + "/cnp.sock";
  auto first = LaunchServer({.args = {"--listen=unix:" + socket}});
  ASSERT_TRUE(first->ready()) << first->Log();
  const ino_t inode = Stat(socket).st_ino;

  auto second = LaunchServer({.args = {"--listen=unix:" + socket}});
  ASSERT_FALSE(second->ready());
  EXPECT_EQ(second->ExitCode(), 1);
  EXPECT_THAT(second->Log(), HasSubstr("another server already listens on " + socket));
  EXPECT_EQ(Stat(socket).st_ino, inode);
  EXPECT_TRUE(Answers("unix:" + socket));
}

// The first server is stopped and its backlog full: a connect() to it would block. The second
// must still see it is alive, at once, and leave its socket alone.
TEST(UnixSocketTest, ALiveServerWithAFullBacklogIsNotMistakenForADeadOne) {
  const std::string dir = ShortTempDir();
  const std::string socket = dir + "/cnp.sock";
  auto first = LaunchServer({.args = {"--listen=unix:" + socket}});
  ASSERT_TRUE(first->ready()) << first->Log();
  const ino_t inode = Stat(socket).st_ino;
  ASSERT_EQ(::kill(first->pid(), SIGSTOP), 0);
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &files);
  std::vector<int> queued;
  for (int i = 0; i < 70000; ++i) {  // the backlog is at most SOMAXCONN (4096 here)
    const int fd = ConnectUnix(socket, /*nonblocking=*/true);
    if (fd < 0) break;
    queued.push_back(fd);
  }
  ASSERT_LT(queued.size(), 70000u) << "the backlog never filled";

  const absl::Time started = absl::Now();
  auto second = LaunchServer({.args = {"--listen=unix:" + socket}});
  ASSERT_FALSE(second->ready());
  EXPECT_THAT(second->Log(), HasSubstr("another server already listens"));
  EXPECT_LT(absl::Now() - started, absl::Seconds(10));
  EXPECT_EQ(Stat(socket).st_ino, inode);

  for (int fd : queued) ::close(fd);
  ASSERT_EQ(::kill(first->pid(), SIGCONT), 0);
  EXPECT_TRUE(Answers("unix:" + socket));
}

TEST(UnixSocketTest, ASocketLeftByADeadServerIsReplaced) {
  const std::string dir = ShortTempDir();
  const std::string socket = dir + "/cnp.sock";
  {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);  // bound, never listening: what a crashed server leaves
  }
  auto server = LaunchServer({.args = {"--listen=unix:" + socket}});
  ASSERT_TRUE(server->ready()) << server->Log();
  EXPECT_TRUE(Answers("unix:" + socket));
}

TEST(UnixSocketTest, AStoppedServerRemovesOnlyItsOwnSocket) {
  const std::string dir = ShortTempDir();
  const std::string socket = dir + "/cnp.sock";
  auto server = LaunchServer({.args = {"--listen=unix:" + socket}});
  ASSERT_TRUE(server->ready()) << server->Log();
  ::kill(server->pid(), SIGTERM);
  EXPECT_EQ(server->ExitCode(), 0) << server->Log();
  EXPECT_NE(::access(socket.c_str(), F_OK), 0);
}


TEST(UnixSocketTest, ConnectGivesUpOnAServerWhoseBacklogIsFull) {
  // A stopped or swamped server accepts nothing: once its backlog is full, a blocking
  // connect() waits until it accepts. The client library's look at why the connection failed
  // made one, and Connect hung for ever past its connect_timeout (a review).
  const std::string dir = ShortTempDir();
  const std::string path = dir + "/cnp.sock";
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(listener, 0), 0);
  std::vector<int> queued;
  for (bool full = false; !full && queued.size() < 64;) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    full = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0;
    ASSERT_TRUE(!full || errno == EAGAIN) << std::strerror(errno);
    queued.push_back(fd);
  }
  ASSERT_LT(queued.size(), 64u) << "the backlog never filled";

  absl::StatusOr<std::unique_ptr<client::Client>> client =
      client::Client::Connect("unix:" + path, absl::Milliseconds(300));
  EXPECT_TRUE(absl::IsUnavailable(client.status())) << client.status();
  for (const int fd : queued) ::close(fd);
  ::close(listener);
}

}  // namespace
}  // namespace cnp::security_testing
