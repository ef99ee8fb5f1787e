// How many TCP connections each peer has open, so that one peer cannot take every connection
// the server can hold (--max-connections-per-peer). An IPv4 peer is its address; an IPv6 peer
// is its address's /64, since a host is given a whole /64 and may connect from any address in
// it (one per connection, were each address counted alone).
//
// gRPC closes the connections the server hands it without telling anyone, so each connection
// is remembered by its descriptor number and its socket's identity (device and inode, which no
// other open socket shares). When a peer reaches its limit, its connections are looked at
// again (fstat): those whose descriptor is closed, or now holds another file, are gone.
//
// Used from the connection acceptor's one thread only.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/string_view.h"

namespace cnp::rpc {

// "ipv4:A" for an IPv4 address or an IPv4-mapped IPv6 one (a client of a [::] listener, which
// gRPC names as IPv4 too); empty for any other address.
std::string Ipv4PeerName(const sockaddr_storage& address);

// What the connections of the peer at `address` (getpeername's) are counted under: "ipv4:A",
// or "ipv6:P::/64" for the /64 that holds the IPv6 address (with its scope, if any); an
// IPv4-mapped IPv6 address is its IPv4 address. "?" for any other family.
std::string PeerCountKey(const sockaddr_storage& address);

// The same key for a peer as gRPC names it (context.peer(): "ipv4:A:PORT", "ipv6:%5BA%5D:PORT",
// "ipv6:[A]:PORT"), so that a peer's refusals are logged under what its connections are counted
// under: keyed on the whole IPv6 address, a host with a /64 could have each connection, from an
// address of its own, logged on a line of its own. Any other peer is what comes before its
// last colon ("unix" for a unix socket's).
std::string PeerCountKeyOfUri(absl::string_view peer);

class PeerConnections {
 public:
  // `limit` 0: no limit (nothing is remembered).
  explicit PeerConnections(int limit) : limit_(limit) {}

  int limit() const { return limit_; }
  // Whether connection `fd` from the peer `key` (PeerCountKey) stays within the peer's limit;
  // if so, it is counted from now on.
  bool Admit(const std::string& key, int fd);

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
