#include "service/listen/listening_socket.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/loopback.h"
#include "common/socket_directory.h"
#include "common/unix_target.h"
#include "service/listen/inherited_sockets.h"
#include "service/common/log.h"
#include "service/listen/listen_address.h"
#include "service/listen/socket_path_lock.h"

namespace cnp::listen {
namespace {

std::string ErrnoText(int error) { return std::strerror(error); }

// The numeric host of `addr` ("::1"), to say which of a name's addresses failed.
std::string HostText(const sockaddr* addr, socklen_t length) {
  char host[NI_MAXHOST];
  if (::getnameinfo(addr, length, host, sizeof host, nullptr, 0, NI_NUMERICHOST) != 0) return "?";
  return host;
}

class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// The directory is created private (0700, or 0750 for a --socket-group); one that exists must
// be ours and writable by no one else.
absl::Status PrepareDirectory(const std::string& dir, int gid) {
  const mode_t mode = gid >= 0 ? 0750 : 0700;
  if (::mkdir(dir.c_str(), mode) == 0) {
    // mkdir applies the umask; the mode must be exactly this.
    if (::chmod(dir.c_str(), mode) != 0 || (gid >= 0 && ::chown(dir.c_str(), -1, gid) != 0)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot set the permissions of the socket directory ", dir, ": ", ErrnoText(errno)));
    }
    return absl::OkStatus();
  }
  if (errno != EEXIST) {
    const int error = errno;
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create the socket directory ", dir, ": ", ErrnoText(error),
        error == ENOENT ? absl::StrCat("; create its parent first (mkdir -p ",
                                       SocketDirectory(dir), "), or listen elsewhere")
                        : ""));
  }
  return CheckSocketDirectory(dir, DirectoryOwner::kMe);
}

// A directory that exists keeps its mode, and one the group cannot search leaves the group's
// 0660 socket out of its members' reach, their clients failing with EACCES while the server
// looks fine. A warning, not a refusal: an ACL may grant what the mode bits do not show.
void WarnIfGroupCannotReach(const std::string& dir, const std::string& path, int gid) {
  struct stat st {};
  if (gid < 0 || ::stat(dir.c_str(), &st) != 0) return;
  const bool group_searches = st.st_gid == static_cast<gid_t>(gid) && (st.st_mode & S_IXGRP);
  if (group_searches || (st.st_mode & S_IXOTH)) return;
  LogWarning("group ", gid, " (--socket-group) cannot reach ", path, ": ", dir, " has mode 0",
             absl::StrFormat("%o", st.st_mode & 07777), " and group ", st.st_gid,
             "; give that group search permission (chgrp ", gid, " ", dir, " && chmod g+x ", dir,
             "), or remove the directory so that the server creates it 0750");
}

absl::StatusOr<ListeningSocket> ListenUnix(const std::string& address, const std::string& path,
                                           const UnixSocketOptions& options) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the socket path '", path, "' must be 1 to ", sizeof addr.sun_path - 1,
        " bytes long (a unix socket address holds no more); choose a shorter one"));
  }
  if (absl::Status s = PrepareDirectory(SocketDirectory(path), options.gid); !s.ok()) {
    return s;
  }
  WarnIfGroupCannotReach(SocketDirectory(path), path, options.gid);
  // Held until listen() has returned: from then on the probe of any server that comes next
  // finds this socket alive (socket_path_lock.h).
  absl::StatusOr<SocketPathLock> lock = SocketPathLock::Take(path, kSocketPathLockWait);
  if (!lock.ok()) return lock.status();
  int error = 0;
  switch (ProbeUnixSocket(path, &error)) {
    case SocketLiveness::kAbsent:
      break;
    case SocketLiveness::kStale:
      // Left by a server that died: nothing accepts on it any more.
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return absl::FailedPreconditionError(absl::StrCat(
            "cannot remove the stale socket ", path, ": ", ErrnoText(errno)));
      }
      break;
    case SocketLiveness::kAlive:
      return absl::AlreadyExistsError(absl::StrCat(
          "another server already listens on ", path, "; stop it or listen elsewhere"));
    case SocketLiveness::kUnknown:
      return absl::FailedPreconditionError(absl::StrCat(
          path, " exists and cannot be probed (", error == 0 ? "not a socket" : ErrnoText(error),
          "); remove it if no server uses it, or listen elsewhere"));
  }

  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return absl::ResourceExhaustedError(absl::StrCat("socket: ", ErrnoText(errno)));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot bind ", path, ": ", ErrnoText(errno)));
  }
  // The file got its mode from the umask (0777 under umask 000). Nobody can connect before
  // listen(), so setting the mode now leaves no window.
  const mode_t mode = options.gid >= 0 ? 0660 : 0600;
  if (::chmod(path.c_str(), mode) != 0 ||
      (options.gid >= 0 && ::chown(path.c_str(), -1, options.gid) != 0)) {
    const int chmod_error = errno;
    ::unlink(path.c_str());
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot set the permissions of ", path, ": ", ErrnoText(chmod_error)));
  }
  ListeningSocket socket;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    socket.unix_dev = st.st_dev;
    socket.unix_ino = st.st_ino;
  }
  if (::listen(fd.get(), SOMAXCONN) != 0) {
    ::unlink(path.c_str());
    return absl::UnavailableError(absl::StrCat("cannot listen on ", path, ": ", ErrnoText(errno)));
  }
  socket.fd = fd.release();
  socket.address = address;
  socket.is_unix = true;
  socket.unix_path = path;
  return socket;
}

void SetPort(sockaddr* addr, int port) {
  if (addr->sa_family == AF_INET) reinterpret_cast<sockaddr_in*>(addr)->sin_port = htons(port);
  if (addr->sa_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(addr)->sin6_port = htons(port);
}

int GetPort(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return 0;
}

absl::StatusOr<std::vector<ListeningSocket>> ListenTcp(const std::string& configured) {
  absl::StatusOr<TcpListenAddress> parsed = ParseTcpListenAddress(configured);
  if (!parsed.ok()) return parsed.status();
  const std::string& address = parsed->host_port;
  const std::string& host = parsed->host;
  const int port = parsed->port;
  if (std::vector<int> inherited = TakeInheritedTcpSockets(port, host);
      !inherited.empty()) {
    std::vector<ListeningSocket> sockets;
    for (int fd : inherited) {
      sockaddr_storage bound{};
      socklen_t len = sizeof bound;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
      ListeningSocket socket;
      socket.fd = fd;
      socket.address = address;
      socket.port = port;
      socket.inherited = true;
      // What systemd bound, not what --listen says, decides whether TLS is required.
      socket.loopback = IsLoopbackAddress(reinterpret_cast<sockaddr*>(&bound));
      sockets.push_back(std::move(socket));
    }
    return sockets;
  }
  absl::StatusOr<std::vector<PassiveAddress>> resolved = ResolveForListening(*parsed);
  if (!resolved.ok()) return resolved.status();
  return ListenOnEach(configured, parsed->host, parsed->port, *resolved);
}

}  // namespace

SocketLiveness ProbeUnixSocket(const std::string& path, int* error) {
  *error = 0;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return SocketLiveness::kAbsent;
    *error = errno;
    return SocketLiveness::kUnknown;
  }
  if (!S_ISSOCK(st.st_mode)) return SocketLiveness::kUnknown;
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) return SocketLiveness::kUnknown;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // Non-blocking: a blocking connect to a server whose backlog is full waits (15 s was seen)
  // and then fails, which made a live server look dead.
  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    *error = errno;
    return SocketLiveness::kUnknown;
  }
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    return SocketLiveness::kAlive;
  }
  *error = errno;
  switch (errno) {
    case EAGAIN:       // listening, backlog full
    case EINPROGRESS:
      return SocketLiveness::kAlive;
    case ECONNREFUSED:  // nobody listens: left by a server that is gone
      return SocketLiveness::kStale;
    case ENOENT:
      return SocketLiveness::kAbsent;
    default:
      return SocketLiveness::kUnknown;
  }
}

absl::StatusOr<std::vector<ListeningSocket>> ListenOnEach(const std::string& address,
                                                          const std::string& host, int port,
                                                          std::vector<PassiveAddress> resolved) {
  std::vector<ListeningSocket> sockets;
  std::string last_error;
  // Closes what was bound before a failure: the caller gets all of the addresses or none.
  auto fail = [&sockets](absl::Status why) {
    for (const ListeningSocket& s : sockets) ::close(s.fd);
    return why;
  };
  for (PassiveAddress& a : resolved) {
    auto* ai_addr = reinterpret_cast<sockaddr*>(&a.addr);
    ScopedFd fd(::socket(a.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) {
      last_error = ErrnoText(errno);
      if (errno == EAFNOSUPPORT) continue;  // IPv6 off: its addresses are no one's
      return fail(absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", last_error)));
    }
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (a.family == AF_INET6) {
      // "[::]" serves IPv4 too; "localhost" binds 127.0.0.1 and ::1 separately, and so does
      // ":PORT" (0.0.0.0, then ::): a dual-stack :: could not bind beside 0.0.0.0's port.
      const int v6only = host == "::" ? 0 : 1;
      ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    }
    // Port 0 picks one port, shared by every address of the host name.
    if (!sockets.empty()) SetPort(ai_addr, sockets.front().port);
    if (::bind(fd.get(), ai_addr, a.length) != 0 || ::listen(fd.get(), SOMAXCONN) != 0) {
      const int error = errno;
      last_error = ErrnoText(error);
      // An address this host does not have is skipped. Any other failure (another process
      // on the port of one of the addresses) fails them all: a client that resolves the name
      // to that address would reach the other process, and give it its token. Only a port
      // picked here (0) is not anyone's to squat on: another address's is tried without it.
      if (error == EADDRNOTAVAIL || (port == 0 && error == EADDRINUSE)) continue;
      return fail(absl::UnavailableError(absl::StrCat(
          "cannot listen on ", address, " (", HostText(ai_addr, a.length), "): ", last_error,
          error == EADDRINUSE
              ? "; another program (another cnp-server?) holds it, and a client given this "
                "address could reach it: stop that program (ss -ltnp shows which), or listen "
                "on another port"
          : error == EACCES
              ? "; a port below 1024 needs root or CAP_NET_BIND_SERVICE: listen on a higher one"
              : "")));
    }
    ListeningSocket socket;
    socket.port = GetPort(fd.get());
    socket.loopback = IsLoopbackAddress(ai_addr);
    socket.fd = fd.release();
    socket.address = address;
    sockets.push_back(std::move(socket));
  }
  if (sockets.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", last_error));
  }
  return sockets;
}

absl::StatusOr<std::vector<ListeningSocket>> OpenListeningSockets(const std::string& address,
                                                                  const UnixSocketOptions& unix) {
  if (IsUnixTarget(address)) {
    absl::StatusOr<std::string> unix_path = UnixSocketPath(address);
    if (!unix_path.ok()) return unix_path.status();
    absl::StatusOr<ListeningSocket> socket = OpenUnixListeningSocket(address, *unix_path, unix);
    if (!socket.ok()) return socket.status();
    std::vector<ListeningSocket> sockets;
    sockets.push_back(std::move(*socket));
    return sockets;
  }
  return ListenTcp(address);
}

absl::StatusOr<ListeningSocket> OpenUnixListeningSocket(const std::string& address,
                                                        const std::string& path,
                                                        const UnixSocketOptions& unix) {
  if (int fd = TakeInheritedUnixSocket(path); fd >= 0) {
    // systemd's socket: its file, mode and owner are the .socket unit's, and it stays when
    // we stop (RemoveOwnSocketFile leaves an inherited socket alone).
    ListeningSocket socket;
    socket.fd = fd;
    socket.address = address;
    socket.is_unix = true;
    socket.unix_path = path;
    socket.inherited = true;
    return socket;
  }
  return ListenUnix(address, path, unix);
}

void RemoveOwnSocketFile(const ListeningSocket& socket) {
  if (!socket.is_unix || socket.inherited) return;
  // Under the lock, or a server starting now could remove our stale socket and bind its own
  // between the check below and the unlink, which would then remove its socket. Without the
  // lock, the file stays: the next server to start removes a stale one.
  absl::StatusOr<SocketPathLock> lock =
      SocketPathLock::Take(socket.unix_path, kSocketPathLockWait);
  if (!lock.ok()) {
    LogWarning("leaving ", socket.unix_path, " in place: ", lock.status().message());
    return;
  }
  struct stat st {};
  if (::lstat(socket.unix_path.c_str(), &st) == 0 && st.st_dev == socket.unix_dev &&
      st.st_ino == socket.unix_ino) {
    ::unlink(socket.unix_path.c_str());
  }
}

absl::Status PrepareSocketDirectory(const std::string& path, const UnixSocketOptions& unix) {
  return PrepareDirectory(SocketDirectory(path), unix.gid);
}

}  // namespace cnp::listen
