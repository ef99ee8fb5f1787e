// Serialises what cnp-servers do to one unix socket path: probe whether a socket file there is
// stale, remove it, bind and listen (listening_socket.cc), and remove their own at exit. Two
// servers started at once on one path each probed, each found the path free or stale, and the
// second removed the socket the first had just bound (between its bind and its listen a socket
// refuses connections, so it looks stale): the first went on serving a file no longer there.
//
// The lock is an flock on PATH.lock, next to the socket, held only for those steps, not for the
// server's life: a socket that is listening answers the probe, so once a server's listen() has
// returned under the lock, no server that takes the lock afterwards removes its socket; and the
// removal at exit checks under the lock that the file is still the one it created. Holding it
// for the server's life would add nothing to that, and a server stuck in its shutdown would
// keep a new one from even probing. The file stays when the server stops (removing a lock file
// others may be waiting on would let two servers hold "the" lock at once); it is created 0600
// in the socket's directory, which listening_socket.cc has already made sure is ours alone:
// only servers running as its owner (or root) bind there.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cnp::listen {

class SocketPathLock {
 public:
  // Takes the lock for the socket at `socket_path`, waiting up to `wait` for a server that
  // holds it (logging once that it waits). kUnavailable when it is still held then.
  static absl::StatusOr<SocketPathLock> Take(const std::string& socket_path, absl::Duration wait);

  SocketPathLock(SocketPathLock&& other) noexcept;
  SocketPathLock& operator=(SocketPathLock&&) = delete;
  SocketPathLock(const SocketPathLock&) = delete;
  ~SocketPathLock();  // releases it

  // The lock file of the socket at `socket_path`: "PATH.lock".
  static std::string LockPath(const std::string& socket_path);

 private:
  explicit SocketPathLock(int fd) : fd_(fd) {}
  int fd_;
};

// How long a server waits for the lock: its holders keep it for a probe, a bind and a listen,
// so a holder for this long is stuck, or not a cnp-server.
inline constexpr absl::Duration kSocketPathLockWait = absl::Seconds(10);

}  // namespace cnp::listen
