// Two cnp-servers starting on one unix socket path each probed it, found it free or stale, and
// the second could remove the socket the first had just bound (between bind and listen it
// refuses connections, as a stale one does). Now probe, removal and bind happen under an flock
// on PATH.lock (service/listen/socket_path_lock.h): a server that finds the lock held waits,
// and touches nothing at the path until it has it.
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "service/listen/socket_path_lock.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"
#include "tests/support/server_process.h"

namespace cnp {
namespace {

using ::cnp::testing::Runfile;
using ::cnp::testing::ServerProcess;
using ::cnp::testing::ShortTempDir;

// A socket file nothing listens on, as a server that died leaves it.
bool MakeStaleSocket(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return bound;
}

ino_t InodeOf(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

// What has happened in the socket's directory: the lock file opened, the socket file removed.
struct Seen {
  bool lock_opened = false;
  bool socket_removed = false;
};

// Reads the directory's events until either has been seen or `timeout` has passed (zero: only
// those already there).
void WatchUntilEither(int watch, const std::string& lock_name, const std::string& socket_name,
                      absl::Duration timeout, Seen& seen) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    const int left =
        std::max(0, static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now())));
    pollfd fd{watch, POLLIN, 0};
    if (::poll(&fd, 1, left) <= 0) return;
    alignas(inotify_event) char buffer[4096];
    const ssize_t n = ::read(watch, buffer, sizeof buffer);
    for (ssize_t at = 0; at < n;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
      const std::string name = event->len > 0 ? event->name : "";
      if ((event->mask & IN_OPEN) && name == lock_name) seen.lock_opened = true;
      if ((event->mask & IN_DELETE) && name == socket_name) seen.socket_removed = true;
      at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
    }
    if (seen.lock_opened || seen.socket_removed) return;
  }
}

bool Accepts(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const bool connected = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return connected;
}

TEST(SocketPathLockTest, AServerWaitsForTheLockBeforeTouchingTheSocketPath) {
  const std::string dir = ShortTempDir();
  const std::string path = dir + "/cnp.sock";
  ASSERT_TRUE(MakeStaleSocket(path));
  const ino_t stale = InodeOf(path);

  // Another server in the middle of its probe and bind, as far as the new one can tell.
  const int held = ::open((path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(held, 0);
  ASSERT_EQ(::flock(held, LOCK_EX), 0);
  const int watch = ::inotify_init1(IN_CLOEXEC);
  ASSERT_GE(::inotify_add_watch(watch, dir.c_str(), IN_OPEN | IN_DELETE), 0);

  std::future<std::unique_ptr<ServerProcess>> launched = std::async(std::launch::async, [&] {
    return ServerProcess::Launch({.args = {"--workers=1", "--max-sessions=0",
                                           "--python-path=" + Runfile("tests/functions/server"),
                                           "--listen=unix:" + path},
                                  .fresh_socket = false});
  });
  // It opens the lock file and waits there; before, it removed the stale socket at once.
  Seen seen;
  WatchUntilEither(watch, "cnp.sock.lock", "cnp.sock", absl::Seconds(60), seen);
  EXPECT_TRUE(seen.lock_opened);
  WatchUntilEither(watch, "cnp.sock.lock", "cnp.sock", absl::ZeroDuration(), seen);
  ::close(watch);
  EXPECT_FALSE(seen.socket_removed) << "the socket file was removed while the lock was held";
  EXPECT_EQ(InodeOf(path), stale);

  ::close(held);  // the other server is done: the waiting one goes on
  std::unique_ptr<ServerProcess> server = launched.get();
  ASSERT_TRUE(server->ready()) << server->Log();
  EXPECT_TRUE(Accepts(path));  // the stale socket is gone, the server's is in its place
}

// A holder that never lets go (a stuck server, or a process that is not a cnp-server) is given
// up on after the wait, with a message that names the path and what to do, rather than waited
// on for ever; once it lets go, the lock is taken.
TEST(SocketPathLockTest, ALockHeldPastTheWaitIsGivenUpWithAClearError) {
  const std::string path = ShortTempDir() + "/cnp.sock";
  const int held = ::open(listen::SocketPathLock::LockPath(path).c_str(),
                          O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(held, 0);
  ASSERT_EQ(::flock(held, LOCK_EX), 0);

  const absl::Time start = absl::Now();
  absl::StatusOr<listen::SocketPathLock> refused =
      listen::SocketPathLock::Take(path, absl::Milliseconds(200));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find(path + ".lock has been locked for 200ms"),
            std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("listen elsewhere"), std::string::npos);

  ::close(held);
  EXPECT_TRUE(listen::SocketPathLock::Take(path, absl::Milliseconds(200)).ok());
}

}  // namespace
}  // namespace cnp
