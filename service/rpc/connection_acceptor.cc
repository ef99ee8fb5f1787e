#include "service/rpc/connection_acceptor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/use_awaitable.hpp"
#include "absl/time/time.h"
#include "service/common/log.h"
#include "service/http2_guard/guarded_connections.h"
#include "service/rpc/bearer_authorization.h"
#include "service/rpc/peer_connections.h"
#include "service/rpc/refusal_log.h"

namespace cnp::rpc {
namespace {

// How long to wait before accepting again after running out of descriptors or memory.
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);
// Connections accepted in one go before the loop lets the other sockets have a turn.
constexpr int kAcceptBatch = 64;

// A TCP peer: the address with its port in gRPC's form (what ServerContext::peer() says, which
// connection_probation.h matches), and what its connections are counted, and its refusals
// logged, under (PeerCountKey: an IPv6 peer is its /64).
struct TcpPeer {
  std::string uri = "?";
  std::string count_key = "?";
};

TcpPeer TcpPeerOf(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return {};
  TcpPeer peer;
  peer.count_key = PeerCountKey(addr);
  std::string address = Ipv4PeerName(addr);
  if (address.empty() && addr.ss_family == AF_INET6) {
    // As gRPC's context.peer() spells it (a URI: brackets and the scope's '%' escaped), or
    // probation would never match the calls an IPv6 connection makes.
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(addr);
    char text[INET6_ADDRSTRLEN] = "?";
    ::inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
    const std::string scope = in6.sin6_scope_id != 0 ? absl::StrCat("%25", in6.sin6_scope_id) : "";
    address = absl::StrCat("ipv6:%5B", text, scope, "%5D");
  }
  if (address.empty()) return {};
  const uint16_t port = addr.ss_family == AF_INET
                            ? reinterpret_cast<const sockaddr_in&>(addr).sin_port
                            : reinterpret_cast<const sockaddr_in6&>(addr).sin6_port;
  peer.uri = absl::StrCat(address, ":", ntohs(port));
  return peer;
}


// How often connections on probation are looked at, and owed access-log lines written.
std::chrono::steady_clock::duration SweepInterval(const ConnectionProbation* probation) {
  using std::chrono::milliseconds;
  if (probation == nullptr || probation->timeout() <= milliseconds(0)) return std::chrono::seconds(1);
  return std::clamp<std::chrono::steady_clock::duration>(probation->timeout() / 4,
                                                         milliseconds(50), std::chrono::seconds(1));
}

std::string FormatTimeout(std::chrono::steady_clock::duration d) {
  return absl::FormatDuration(absl::FromChrono(d));
}

}  // namespace

int TcpDescriptorCap(int descriptor_cap) {
  // An eighth of the connections, at least 16, are for unix sockets only: CouchDB's adapters
  // (one connection each, os_process_limit of them per node at most) still get in when TCP
  // peers have taken every connection they may.
  const int reserve = std::max(16, descriptor_cap / 8);
  return descriptor_cap > 2 * reserve ? descriptor_cap - reserve : descriptor_cap / 2;
}

class ConnectionAcceptor::Loop {
 public:
  Loop(const std::vector<listen::ListeningSocket>& sockets, AcceptPolicy policy,
       RefusalLog& refusals, HandOver hand_over)
      : sockets_(sockets), policy_(std::move(policy)), refusals_(refusals),
        hand_over_(std::move(hand_over)), peer_connections_(policy_.max_connections_per_peer) {
    for (const listen::ListeningSocket& socket : sockets_) listeners_.emplace_back(io_, socket.fd);
  }

  ~Loop() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
    // The descriptors close the listening sockets as they go.
  }

  void Start() {
    for (size_t i = 0; i < listeners_.size(); ++i) {
      asio::co_spawn(io_, AcceptLoop(i), asio::detached);
    }
    asio::co_spawn(io_, Sweep(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }

 private:
  asio::awaitable<void> AcceptLoop(size_t index) {
    asio::posix::stream_descriptor& listener = listeners_[index];
    asio::steady_timer retry(io_);
    for (;;) {
      std::error_code error;
      co_await listener.async_wait(asio::posix::descriptor_base::wait_read,
                                   asio::redirect_error(asio::use_awaitable, error));
      if (error) co_return;  // closed: the server is stopping
      for (int n = 0; n < kAcceptBatch; ++n) {
        const int fd = ::accept4(listener.native_handle(), nullptr, nullptr,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
          Admit(index, fd);
          continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EAGAIN) break;
        // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays in the backlog until
        // descriptors are free again.
        if (!out_of_descriptors_) {
          LogWarning("cannot accept connections on ", sockets_[index].address, ": ",
                     std::strerror(errno), "; retrying every ",
                     std::chrono::milliseconds(kAcceptRetry).count(), " ms until it works");
        }
        out_of_descriptors_ = true;
        retry.expires_after(kAcceptRetry);
        co_await retry.async_wait(asio::redirect_error(asio::use_awaitable, error));
        break;
      }
    }
  }

  void Admit(size_t index, int fd) {
    if (out_of_descriptors_) {
      LogInfo("accepting connections again");
      out_of_descriptors_ = false;
    }
    const listen::ListeningSocket& socket = sockets_[index];
    if (socket.is_unix) {
      AdmitUnix(index, fd);
    } else {
      AdmitTcp(index, fd);
    }
  }

  void AdmitUnix(size_t index, int fd) {
    const listen::ListeningSocket& socket = sockets_[index];
    const std::string peer = absl::StrCat("unix:", socket.unix_path);
    if (fd >= policy_.descriptor_cap) {
      RefuseForCap(peer, peer, fd, policy_.descriptor_cap, "");
      return;
    }
    ucred credentials{};
    socklen_t len = sizeof credentials;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &len) != 0 ||
        policy_.allowed_uids.count(credentials.uid) == 0) {
      const std::string uid = absl::StrCat(credentials.uid);
      refusals_.Refused("refused", absl::StrCat(peer, " uid ", uid), peer,
                        "uid not allowed (see --allow-uid)",
                        {{"peer_uid", uid, true},
                         {"peer_pid", absl::StrCat(credentials.pid), true}});
      ::close(fd);
      return;
    }
    GuardHttp2(fd, absl::StrCat(peer, " uid ", credentials.uid), peer);
    hand_over_(index, fd);
  }

  void AdmitTcp(size_t index, int fd) {
    const TcpPeer peer = TcpPeerOf(fd);
    if (fd >= policy_.tcp_descriptor_cap) {
      RefuseForCap(peer.count_key, peer.uri, fd, policy_.tcp_descriptor_cap,
                   "; the rest are kept for unix-socket clients");
      return;
    }
    if (!peer_connections_.Admit(peer.count_key, fd)) {
      const bool one_address = absl::StartsWith(peer.count_key, "ipv4:");
      refusals_.Refused("refused", peer.count_key, peer.uri,
                        absl::StrCat(one_address ? "this address has " : "this address's /64 has ",
                                     peer_connections_.limit(),
                                     " connections open (--max-connections-per-peer)"));
      ::close(fd);
      return;
    }
    if (policy_.probation != nullptr && policy_.probation->timeout().count() > 0) {
      const int held = policy_.probation->Watch(peer.uri, fd);
      if (held < 0 || held >= policy_.tcp_descriptor_cap) {
        // Holding it would take a descriptor past the cap: no room for this connection.
        if (held >= 0) policy_.probation->Release(peer.uri);
        RefuseForCap(peer.count_key, peer.uri, fd, policy_.tcp_descriptor_cap,
                     "; the rest are kept for unix-socket clients");
        return;
      }
    }
    // Lockstep exchanges (one CouchDB document at a time) must not wait for Nagle.
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!policy_.tcp_tls) GuardHttp2(fd, peer.count_key, peer.uri);
    hand_over_(index, fd);
  }

  // The connection's HTTP/2 read by a FrameGuard as gRPC reads it: one that passes its limits
  // is closed there, and the access log says why (a "closed" line per peer and interval).
  void GuardHttp2(int fd, std::string key, std::string peer) {
    http2_guard::GuardConnection(fd, [&refusals = refusals_, key = std::move(key),
                                 peer = std::move(peer)](absl::string_view why) {
      refusals.Refused("closed", key, peer, absl::StrCat("its HTTP/2 ", why));
    });
  }

  // Closed at once, so the client learns at once. Refusals are logged before the connection
  // is closed: once a client sees its connection closed, the line is there.
  void RefuseForCap(const std::string& key, const std::string& peer, int fd, int cap,
                    absl::string_view more) {
    refusals_.Refused("refused", key, peer,
                      absl::StrCat("too many open connections (descriptor cap ", cap,
                                   " below the open-files limit", more, ")"));
    ::close(fd);
  }

  // Closes the connections whose probation is over, and writes the refusal lines owed.
  asio::awaitable<void> Sweep() {
    asio::steady_timer tick(io_);
    const auto interval = SweepInterval(policy_.probation);
    for (;;) {
      tick.expires_after(interval);
      std::error_code error;
      co_await tick.async_wait(asio::redirect_error(asio::use_awaitable, error));
      if (error) co_return;
      if (policy_.probation != nullptr) {
        for (const std::string& peer : policy_.probation->CloseExpired()) {
          refusals_.Refused("closed", PeerCountKeyOfUri(peer), peer,
                            absl::StrCat("no call admitted within ",
                                         FormatTimeout(policy_.probation->timeout()),
                                         " of connecting (--first-call-timeout)"));
        }
      }
      refusals_.Flush();
    }
  }

  const std::vector<listen::ListeningSocket>& sockets_;
  const AcceptPolicy policy_;
  RefusalLog& refusals_;  // shared with the calls' token checks
  const HandOver hand_over_;
  asio::io_context io_{1};
  std::vector<asio::posix::stream_descriptor> listeners_;
  std::thread thread_;
  PeerConnections peer_connections_;
  bool out_of_descriptors_ = false;
};

ConnectionAcceptor::ConnectionAcceptor(std::vector<listen::ListeningSocket> sockets,
                                       AcceptPolicy policy, RefusalLog& refusals,
                                       HandOver hand_over)
    : sockets_(std::move(sockets)),
      probation_(policy.probation),
      loop_(std::make_unique<Loop>(sockets_, std::move(policy), refusals, std::move(hand_over))) {}

ConnectionAcceptor::~ConnectionAcceptor() { Stop(); }

void ConnectionAcceptor::Start() { loop_->Start(); }

void ConnectionAcceptor::Stop() {
  if (loop_ == nullptr) return;
  loop_.reset();
  // gRPC closes the connections from here on; the probation's holds would keep them open.
  if (probation_ != nullptr) probation_->EndAll();
  for (const listen::ListeningSocket& socket : sockets_) listen::RemoveOwnSocketFile(socket);
}

}  // namespace cnp::rpc
