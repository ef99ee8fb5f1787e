// Accepts the connections of the server's listening sockets and hands each one to gRPC
// (ServerBuilder's external connection acceptors, which add TLS where configured).
//
// Accepting ourselves lets the server decide who gets in before gRPC sees a byte:
// - a unix-socket peer's uid (SO_PEERCRED) must be in the allowed set, else the connection is
//   closed and the access log says who it was;
// - connections are capped below the descriptor limit: one whose descriptor number reaches the
//   cap is closed at once, so calls in flight, workers and uploads always find descriptors;
// - TCP connections are capped lower still, so that a flood of them (from anyone who can
//   reach a TCP listener) leaves room for the unix-socket clients: CouchDB's adapters;
// - one peer address may have only so many TCP connections open (--max-connections-per-peer);
// - a TCP connection that makes no admitted call soon is closed (connection_probation.h);
// - a plaintext connection whose HTTP/2 passes limits gRPC 1.51 does not enforce is closed
//   (service/http2_guard: streams before the SETTINGS ack, PING, SETTINGS and RST_STREAM
//   floods, endless header blocks);
// - refusals are logged once per peer and interval (refusal_log.h), not once per connection;
// - when accept() itself fails for want of descriptors or memory, it is retried shortly after.
//   gRPC 1.51's own listener stopped for good on EMFILE, and every later call failed until a
//   restart.
// The accept loops are coroutines on an Asio loop of their own, off the calls' threads.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <set>
#include <vector>

#include "service/listen/descriptor_cap.h"
#include "service/listen/listening_socket.h"
#include "service/rpc/access_log.h"
#include "service/rpc/connection_probation.h"
#include "service/rpc/refusal_log.h"

namespace cnp::rpc {

struct AcceptPolicy {
  std::set<uid_t> allowed_uids;  // unix sockets only
  int descriptor_cap = 0;        // accepted descriptors numbered at or above this are closed
  int tcp_descriptor_cap = 0;    // the same for TCP connections: below descriptor_cap
  int max_connections_per_peer = 0;  // TCP connections one address may have open; 0: any
  ConnectionProbation* probation = nullptr;  // null: none
  // Whether the TCP listeners speak TLS. The connections whose HTTP/2 is in plaintext (every
  // unix socket's, TCP's without TLS) have it read by a FrameGuard (service/http2_guard).
  bool tcp_tls = false;
};

// The descriptor cap for the current RLIMIT_NOFILE (service/listen/descriptor_cap.h, which the
// direct-session listener shares): a headroom below the soft limit is kept for everything that
// is not a connection.
inline int DescriptorCapForLimit() { return listen::DescriptorCapForLimit(); }
// The cap for TCP connections under `descriptor_cap`: the descriptors between them are kept
// for unix-socket connections.
int TcpDescriptorCap(int descriptor_cap);

class ConnectionAcceptor {
 public:
  // `hand_over(i, fd)` gives connection `fd`, accepted on sockets[i], to gRPC.
  using HandOver = std::function<void(size_t socket_index, int fd)>;

  // Refused and closed connections are written to `refusals`, which the acceptor flushes on
  // its sweep (for the calls' token refusals it shares too).
  ConnectionAcceptor(std::vector<listen::ListeningSocket> sockets, AcceptPolicy policy,
                     RefusalLog& refusals, HandOver hand_over);
  ~ConnectionAcceptor();  // Stop()

  const std::vector<listen::ListeningSocket>& sockets() const { return sockets_; }

  void Start();
  // Stops accepting, closes the listening sockets and removes the socket files we created.
  // Idempotent; must be called before gRPC is shut down (it closes what it is then handed).
  void Stop();

 private:
  class Loop;

  std::vector<listen::ListeningSocket> sockets_;
  ConnectionProbation* const probation_;
  std::unique_ptr<Loop> loop_;
};

}  // namespace cnp::rpc
