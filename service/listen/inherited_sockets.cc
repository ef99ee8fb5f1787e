#include "service/listen/inherited_sockets.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

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

}  // namespace

void AdoptInheritedSockets() {
  // Unsets LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES, checks LISTEN_PID is us, and marks the
  // descriptors close-on-exec.
  const int count = ::sd_listen_fds(/*unset_environment=*/1);
  absl::MutexLock lock(&mutex);
  for (int i = 0; i < count; ++i) Unclaimed().push_back(SD_LISTEN_FDS_START + i);
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

std::vector<int> TakeInheritedTcpSockets(int port) {
  absl::MutexLock lock(&mutex);
  std::vector<int> taken;
  if (port <= 0) return taken;  // port 0 picks a port: nothing passed can be meant
  for (size_t i = Unclaimed().size(); i-- > 0;) {
    if (::sd_is_socket_inet(Unclaimed()[i], AF_UNSPEC, SOCK_STREAM, /*listening=*/1,
                            static_cast<uint16_t>(port)) > 0) {
      taken.insert(taken.begin(), Claim(Unclaimed().begin() + i));
    }
  }
  return taken;
}

std::vector<sockaddr_storage> InheritedTcpSocketAddresses(int port) {
  absl::MutexLock lock(&mutex);
  std::vector<sockaddr_storage> addresses;
  if (port <= 0) return addresses;
  for (int fd : Unclaimed()) {
    if (::sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, /*listening=*/1,
                            static_cast<uint16_t>(port)) <= 0) {
      continue;
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) == 0) {
      addresses.push_back(bound);
    }
  }
  return addresses;
}

absl::Status CheckEveryInheritedSocketTaken() {
  absl::MutexLock lock(&mutex);
  if (Unclaimed().empty()) return absl::OkStatus();
  std::vector<std::string> names;
  for (int fd : Unclaimed()) {
    names.push_back(Describe(fd));
    ::close(fd);
  }
  Unclaimed().clear();
  return absl::FailedPreconditionError(absl::StrCat(
      "the service manager passed sockets that no --listen address names: ",
      absl::StrJoin(names, ", "),
      "; add them to `listen` (a unix path P also covers P.direct) or remove them from the "
      ".socket unit"));
}

}  // namespace cnp::listen
