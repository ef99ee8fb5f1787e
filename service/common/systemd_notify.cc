#include "service/common/systemd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstddef>
#include <cstring>
#include <utility>

#include "service/common/log.h"

namespace cnp {

SystemdNotifier SystemdNotifier::TakeFromEnvironment() {
  const char* address = std::getenv("NOTIFY_SOCKET");
  std::string taken = address == nullptr ? "" : address;
  ::unsetenv("NOTIFY_SOCKET");
  return SystemdNotifier(std::move(taken));
}

void SystemdNotifier::Notify(std::string_view state) const {
  if (address_.empty()) return;
  sockaddr_un to{};
  to.sun_family = AF_UNIX;
  // systemd 252 (Debian 12) gives a path or an abstract name; nothing else is a unix socket.
  if ((address_[0] != '/' && address_[0] != '@') || address_.size() >= sizeof(to.sun_path)) {
    LogWarning("NOTIFY_SOCKET=", address_, " is not a unix socket address: systemd is not told ",
               std::string(state));
    return;
  }
  std::memcpy(to.sun_path, address_.data(), address_.size());
  if (to.sun_path[0] == '@') to.sun_path[0] = '\0';  // abstract: the name is the bytes after it
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size());
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                         reinterpret_cast<const sockaddr*>(&to), length) < 0) {
    LogWarning("telling systemd ", std::string(state), " at NOTIFY_SOCKET=", address_, " failed: ",
               std::strerror(errno));
  }
  if (fd >= 0) ::close(fd);
}

}  // namespace cnp
