#include "service/rpc/peer_connections.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cnp::rpc {
namespace {

bool StillOpen(int fd, dev_t device, ino_t inode) {
  struct stat now {};
  return ::fstat(fd, &now) == 0 && now.st_dev == device && now.st_ino == inode;
}

}  // namespace

std::string PeerCountKey(const sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (address.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(address);
    ::inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
    return absl::StrCat("ipv4:", text);
  }
  if (address.ss_family != AF_INET6) return "?";
  const auto& in6 = reinterpret_cast<const sockaddr_in6&>(address);
  if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
    in_addr v4{};
    std::memcpy(&v4, &in6.sin6_addr.s6_addr[12], sizeof v4);
    ::inet_ntop(AF_INET, &v4, text, sizeof text);
    return absl::StrCat("ipv4:", text);
  }
  in6_addr prefix = in6.sin6_addr;
  std::memset(&prefix.s6_addr[8], 0, 8);
  ::inet_ntop(AF_INET6, &prefix, text, sizeof text);
  const std::string scope = in6.sin6_scope_id != 0 ? absl::StrCat("%", in6.sin6_scope_id) : "";
  return absl::StrCat("ipv6:", text, scope, "/64");
}

bool PeerConnections::Admit(const std::string& key, int fd) {
  if (limit_ <= 0) return true;
  struct stat socket {};
  if (::fstat(fd, &socket) != 0) return false;
  std::vector<Connection>& connections = peers_[key];
  if (connections.size() >= static_cast<size_t>(limit_)) {
    remembered_ -= connections.size();
    Prune(connections);
    remembered_ += connections.size();
    if (connections.size() >= static_cast<size_t>(limit_)) return false;
  }
  connections.push_back({fd, socket.st_dev, socket.st_ino});
  if (++remembered_ >= prune_all_at_) {
    PruneAll();
    prune_all_at_ = std::max<size_t>(1024, 2 * remembered_);
  }
  return true;
}

void PeerConnections::Prune(std::vector<Connection>& connections) {
  std::erase_if(connections, [](const Connection& c) {
    return !StillOpen(c.fd, c.device, c.inode);
  });
}

void PeerConnections::PruneAll() {
  remembered_ = 0;
  for (auto it = peers_.begin(); it != peers_.end();) {
    Prune(it->second);
    if (it->second.empty()) {
      it = peers_.erase(it);
    } else {
      remembered_ += it->second.size();
      ++it;
    }
  }
}

}  // namespace cnp::rpc
