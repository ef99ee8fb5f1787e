#include "service/rpc/peer_connections.h"

#include <sys/stat.h>

#include <algorithm>

namespace cnp::rpc {
namespace {

bool StillOpen(int fd, dev_t device, ino_t inode) {
  struct stat now {};
  return ::fstat(fd, &now) == 0 && now.st_dev == device && now.st_ino == inode;
}

}  // namespace

bool PeerConnections::Admit(const std::string& address, int fd) {
  if (limit_ <= 0) return true;
  struct stat socket {};
  if (::fstat(fd, &socket) != 0) return false;
  std::vector<Connection>& connections = peers_[address];
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
