// How many TCP connections each peer address has open, so that one address cannot take every
// connection the server can hold (--max-connections-per-peer).
//
// gRPC closes the connections the server hands it without telling anyone, so each connection
// is remembered by its descriptor number and its socket's identity (device and inode, which no
// other open socket shares). When a peer reaches its limit, its connections are looked at
// again (fstat): those whose descriptor is closed, or now holds another file, are gone.
//
// Used from the connection acceptor's one thread only.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <unordered_map>
#include <vector>

namespace cnp::rpc {

class PeerConnections {
 public:
  // `limit` 0: no limit (nothing is remembered).
  explicit PeerConnections(int limit) : limit_(limit) {}

  int limit() const { return limit_; }
  // Whether connection `fd` from `address` (without its port) stays within the peer's limit;
  // if so, it is counted from now on.
  bool Admit(const std::string& address, int fd);

 private:
  struct Connection {
    int fd;
    dev_t device;
    ino_t inode;
  };
  // Drops the connections that are no longer open.
  static void Prune(std::vector<Connection>& connections);
  void PruneAll();

  const int limit_;
  std::unordered_map<std::string, std::vector<Connection>> peers_;
  size_t remembered_ = 0;
  // Every peer is pruned when this many connections are remembered, so that the addresses
  // and connections of the past do not pile up.
  size_t prune_all_at_ = 1024;
};

}  // namespace cnp::rpc
