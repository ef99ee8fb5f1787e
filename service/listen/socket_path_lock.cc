#include "service/listen/socket_path_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "service/common/log.h"

namespace cnp::listen {

std::string SocketPathLock::LockPath(const std::string& socket_path) {
  return socket_path + ".lock";
}

absl::StatusOr<SocketPathLock> SocketPathLock::Take(const std::string& socket_path,
                                                    absl::Duration wait) {
  const std::string path = LockPath(socket_path);
  // Not through a symlink: the directory is ours, but the lock must be this file, not one a
  // link points at.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot open ", path, " (the lock that keeps servers starting on ", socket_path,
        " from removing each other's socket): ", std::strerror(errno)));
  }
  SocketPathLock lock(fd);
  const absl::Time deadline = absl::Now() + wait;
  bool said = false;
  // flock() has no timeout: tried again every 10 ms. Holders keep it for microseconds.
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot lock ", path, ": ", std::strerror(errno)));
    }
    if (absl::Now() >= deadline) {
      return absl::UnavailableError(absl::StrCat(
          path, " has been locked for ", absl::FormatDuration(wait),
          " by another process (a cnp-server binding or removing ", socket_path,
          " holds it for a moment): ", socket_path, " is in use; stop that process or listen "
          "elsewhere"));
    }
    if (!said) {
      LogInfo("waiting for ", path, ": another cnp-server is binding or removing ", socket_path);
      said = true;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return lock;
}

SocketPathLock::SocketPathLock(SocketPathLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)) {}

SocketPathLock::~SocketPathLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace cnp::listen
