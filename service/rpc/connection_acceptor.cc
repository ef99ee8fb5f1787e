#include "service/rpc/connection_acceptor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/use_awaitable.hpp"
#include "service/common/log.h"

namespace cnp::rpc {
namespace {

// How long to wait before accepting again after running out of descriptors or memory.
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);
// Connections accepted in one go before the loop lets the other sockets have a turn.
constexpr int kAcceptBatch = 64;

std::string TcpPeer(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  char text[INET6_ADDRSTRLEN] = "?";
  if (addr.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
    return absl::StrCat("ipv4:", text, ":", ntohs(in->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    return absl::StrCat("ipv6:[", text, "]:", ntohs(in6->sin6_port));
  }
  return "?";
}

}  // namespace

int DescriptorCapForLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 1 << 30;
  const rlim_t soft = std::min<rlim_t>(limit.rlim_cur, 1 << 30);
  // Workers, their pipes, gRPC's own descriptors, log files and uploads' HTTP connections
  // live in the headroom.
  const rlim_t headroom = std::max<rlim_t>(64, soft / 16);
  return soft > headroom ? static_cast<int>(soft - headroom) : static_cast<int>(soft / 2);
}

class ConnectionAcceptor::Loop {
 public:
  Loop(const std::vector<ListeningSocket>& sockets, AcceptPolicy policy, const AccessLog& log,
       HandOver hand_over)
      : sockets_(sockets), policy_(std::move(policy)), log_(log),
        hand_over_(std::move(hand_over)) {
    for (const ListeningSocket& socket : sockets_) listeners_.emplace_back(io_, socket.fd);
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
    const ListeningSocket& socket = sockets_[index];
    if (fd >= policy_.descriptor_cap) {
      RefuseForCap(socket, fd);
      return;
    }
    if (socket.is_unix) {
      ucred peer{};
      socklen_t len = sizeof peer;
      if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 ||
          policy_.allowed_uids.count(peer.uid) == 0) {
        log_.Write("refused", absl::StrCat("unix:", socket.unix_path),
                   {{"uid", absl::StrCat(peer.uid)},
                    {"pid", absl::StrCat(peer.pid)},
                    {"reason", "uid not allowed (see --allow-uid)"}});
        ::close(fd);
        return;
      }
    } else {
      // Lockstep exchanges (one CouchDB document at a time) must not wait for Nagle.
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    hand_over_(index, fd);
  }

  // Closed at once, so the client learns at once. During a flood the access log gets one
  // line per second saying how many were refused, rather than one line per connection.
  void RefuseForCap(const ListeningSocket& socket, int fd) {
    const std::string peer =
        socket.is_unix ? absl::StrCat("unix:", socket.unix_path) : TcpPeer(fd);
    ::close(fd);
    ++refused_for_cap_;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_cap_line_ < std::chrono::seconds(1)) return;
    log_.Write("refused", peer,
               {{"reason", absl::StrCat("too many open connections (descriptor cap ",
                                        policy_.descriptor_cap, " below the open-files limit)")},
                {"refused_since_last_line", absl::StrCat(refused_for_cap_)}});
    refused_for_cap_ = 0;
    last_cap_line_ = now;
  }

  const std::vector<ListeningSocket>& sockets_;
  const AcceptPolicy policy_;
  const AccessLog& log_;
  const HandOver hand_over_;
  asio::io_context io_{1};
  std::vector<asio::posix::stream_descriptor> listeners_;
  std::thread thread_;
  bool out_of_descriptors_ = false;
  int64_t refused_for_cap_ = 0;
  std::chrono::steady_clock::time_point last_cap_line_;
};

ConnectionAcceptor::ConnectionAcceptor(std::vector<ListeningSocket> sockets, AcceptPolicy policy,
                                       const AccessLog& log, HandOver hand_over)
    : sockets_(std::move(sockets)),
      loop_(std::make_unique<Loop>(sockets_, std::move(policy), log, std::move(hand_over))) {}

ConnectionAcceptor::~ConnectionAcceptor() { Stop(); }

void ConnectionAcceptor::Start() { loop_->Start(); }

void ConnectionAcceptor::Stop() {
  if (loop_ == nullptr) return;
  loop_.reset();
  for (const ListeningSocket& socket : sockets_) RemoveOwnSocketFile(socket);
}

}  // namespace cnp::rpc
