#include "service/rpc/peer_connections.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

namespace cnp::rpc {
namespace {

bool StillOpen(int fd, dev_t device, ino_t inode) {
  struct stat now {};
  return ::fstat(fd, &now) == 0 && now.st_dev == device && now.st_ino == inode;
}

}  // namespace

std::string Ipv4PeerName(const sockaddr_storage& address) {
  in_addr v4{};
  if (address.ss_family == AF_INET) {
    v4 = reinterpret_cast<const sockaddr_in&>(address).sin_addr;
  } else if (const auto& in6 = reinterpret_cast<const sockaddr_in6&>(address);
             address.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
    std::memcpy(&v4, &in6.sin6_addr.s6_addr[12], sizeof v4);
  } else {
    return {};
  }
  char text[INET_ADDRSTRLEN] = "?";
  ::inet_ntop(AF_INET, &v4, text, sizeof text);
  return absl::StrCat("ipv4:", text);
}

std::string PeerCountKey(const sockaddr_storage& address) {
  if (std::string v4 = Ipv4PeerName(address); !v4.empty()) return v4;
  if (address.ss_family != AF_INET6) return "?";
  const auto& in6 = reinterpret_cast<const sockaddr_in6&>(address);
  in6_addr prefix = in6.sin6_addr;
  std::memset(&prefix.s6_addr[8], 0, 8);
  char text[INET6_ADDRSTRLEN] = "?";
  ::inet_ntop(AF_INET6, &prefix, text, sizeof text);
  const std::string scope = in6.sin6_scope_id != 0 ? absl::StrCat("%", in6.sin6_scope_id) : "";
  return absl::StrCat("ipv6:", text, scope, "/64");
}

std::string PeerCountKeyOfUri(absl::string_view peer) {
  absl::string_view address = peer;
  if (const size_t colon = address.rfind(':'); colon != absl::string_view::npos) {
    address = address.substr(0, colon);
  }
  sockaddr_storage storage{};
  if (absl::string_view v4 = address; absl::ConsumePrefix(&v4, "ipv4:")) {
    auto& in4 = reinterpret_cast<sockaddr_in&>(storage);
    in4.sin_family = AF_INET;
    if (::inet_pton(AF_INET, std::string(v4).c_str(), &in4.sin_addr) == 1) {
      return PeerCountKey(storage);
    }
  } else if (absl::string_view v6 = address; absl::ConsumePrefix(&v6, "ipv6:")) {
    // gRPC escapes the brackets and the scope's '%' (a URI): "%5Bfe80::1%252%5D".
    std::string text = absl::StrReplaceAll(v6, {{"%5B", ""}, {"%5D", ""}, {"[", ""}, {"]", ""},
                                                {"%25", "%"}});
    auto& in6 = reinterpret_cast<sockaddr_in6&>(storage);
    in6.sin6_family = AF_INET6;
    if (const size_t percent = text.find('%'); percent != std::string::npos) {
      uint32_t scope = 0;
      if (absl::SimpleAtoi(absl::string_view(text).substr(percent + 1), &scope)) {
        in6.sin6_scope_id = scope;
      }
      text.resize(percent);
    }
    if (::inet_pton(AF_INET6, text.c_str(), &in6.sin6_addr) == 1) return PeerCountKey(storage);
  }
  return std::string(address);
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
