#include "service/listen/inherited_sockets.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"

namespace cnp::listen {
namespace {

absl::Mutex mutex;
std::vector<int>& Unclaimed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) {
  static auto* fds = new std::vector<int>();
  return *fds;
}

int Claim(std::vector<int>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) {
  const int fd = *it;
  Unclaimed().erase(it);
  // The acceptors expect non-blocking sockets; systemd passes blocking ones by default.
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

std::string Describe(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return absl::StrCat("descriptor ", fd);
  }
  if (addr.ss_family == AF_UNIX) {
    return absl::StrCat("unix:", reinterpret_cast<sockaddr_un*>(&addr)->sun_path);
  }
  char host[64] = "?";
  int port = 0;
  if (addr.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
    return absl::StrCat(host, ":", port);
  }
  if (addr.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat("descriptor ", fd);
}

// The address a --listen host names when it is an IP address other than a wildcard: such an
// address claims the passed socket bound to it alone. With ListenStream=127.0.0.1:P and
// [::1]:P, each in `listen`, the first took both and the second then failed to bind. A name
// (localhost) or a wildcard (0.0.0.0, ::, none) stands for every address of its port.
std::optional<sockaddr_storage> NumericAddress(const std::string& host) {
  sockaddr_storage address{};
  auto* in = reinterpret_cast<sockaddr_in*>(&address);
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&address);
  if (::inet_pton(AF_INET, host.c_str(), &in->sin_addr) == 1) {
    if (in->sin_addr.s_addr == htonl(INADDR_ANY)) return std::nullopt;
    address.ss_family = AF_INET;
    return address;
  }
  if (::inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) == 1) {
    if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) return std::nullopt;
    address.ss_family = AF_INET6;
    return address;
  }
  return std::nullopt;
}

// Whether the passed socket `fd` listens on TCP `port`, at `address` when there is one.
bool Matches(int fd, int port, const std::optional<sockaddr_storage>& address) {
  if (::sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, /*listening=*/1,
                          static_cast<uint16_t>(port)) <= 0) {
    return false;
  }
  if (!address.has_value()) return true;
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) != 0 ||
      bound.ss_family != address->ss_family) {
    return false;
  }
  if (bound.ss_family == AF_INET) {
    return reinterpret_cast<const sockaddr_in&>(bound).sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in&>(*address).sin_addr.s_addr;
  }
  return IN6_ARE_ADDR_EQUAL(&reinterpret_cast<const sockaddr_in6&>(bound).sin6_addr,
                            &reinterpret_cast<const sockaddr_in6&>(*address).sin6_addr);
}

}  // namespace

void AdoptInheritedSockets() {
  // Unsets LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES, checks LISTEN_PID is us, and marks the
  // descriptors close-on-exec.
  const int count = ::sd_listen_fds(/*unset_environment=*/1);
  absl::MutexLock lock(&mutex);
  for (int i = 0; i < count; ++i) Unclaimed().push_back(SD_LISTEN_FDS_START + i);
}

bool IsInheritedUnixSocket(const std::string& path) {
  absl::MutexLock lock(&mutex);
  for (int fd : Unclaimed()) {
    if (::sd_is_socket_unix(fd, SOCK_STREAM, /*listening=*/1, path.c_str(), 0) > 0) return true;
  }
  return false;
}

int TakeInheritedUnixSocket(const std::string& path) {
  absl::MutexLock lock(&mutex);
  for (auto it = Unclaimed().begin(); it != Unclaimed().end(); ++it) {
    if (::sd_is_socket_unix(*it, SOCK_STREAM, /*listening=*/1, path.c_str(), 0) > 0) {
      return Claim(it);
    }
  }
  return -1;
}

std::vector<int> TakeInheritedTcpSockets(int port, const std::string& host) {
  absl::MutexLock lock(&mutex);
  std::vector<int> taken;
  if (port <= 0) return taken;  // port 0 picks a port: nothing passed can be meant
  const std::optional<sockaddr_storage> address = NumericAddress(host);
  for (size_t i = Unclaimed().size(); i-- > 0;) {
    if (Matches(Unclaimed()[i], port, address)) {
      taken.insert(taken.begin(), Claim(Unclaimed().begin() + i));
    }
  }
  return taken;
}

std::vector<sockaddr_storage> InheritedTcpSocketAddresses(int port, const std::string& host) {
  absl::MutexLock lock(&mutex);
  std::vector<sockaddr_storage> addresses;
  if (port <= 0) return addresses;
  const std::optional<sockaddr_storage> address = NumericAddress(host);
  for (int fd : Unclaimed()) {
    if (!Matches(fd, port, address)) continue;
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) == 0) {
      addresses.push_back(bound);
    }
  }
  return addresses;
}

namespace {

absl::Status NoAddressNames(const std::vector<std::string>& names) {
  return absl::FailedPreconditionError(absl::StrCat(
      "the service manager passed sockets that no --listen address names: ",
      absl::StrJoin(names, ", "),
      "; add them to `listen` (a unix path P also covers P.direct; a TCP address may be "
      "`metrics-listen`'s) or remove them from the .socket unit"));
}

}  // namespace

absl::Status CheckEveryInheritedSocketTaken() {
  absl::MutexLock lock(&mutex);
  if (Unclaimed().empty()) return absl::OkStatus();
  std::vector<std::string> names;
  for (int fd : Unclaimed()) {
    names.push_back(Describe(fd));
    ::close(fd);
  }
  Unclaimed().clear();
  return NoAddressNames(names);
}

absl::Status CheckInheritedSocketsNamed(const std::vector<std::string>& unix_paths,
                                        const std::vector<TcpListen>& tcp) {
  absl::MutexLock lock(&mutex);
  std::vector<std::string> names;
  for (int fd : Unclaimed()) {
    bool named = false;
    for (const std::string& path : unix_paths) {
      named = named ||
              ::sd_is_socket_unix(fd, SOCK_STREAM, /*listening=*/1, path.c_str(), 0) > 0;
    }
    for (const TcpListen& listen : tcp) {
      named = named || (listen.port > 0 && Matches(fd, listen.port, NumericAddress(listen.host)));
    }
    if (!named) names.push_back(Describe(fd));
  }
  if (names.empty()) return absl::OkStatus();
  return NoAddressNames(names);
}

}  // namespace cnp::listen
