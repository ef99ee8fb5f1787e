// A TCP --listen (or --metrics-listen) address as the server reads it, and the addresses it
// will listen on. The configuration checks them before anything starts (a plaintext listener
// beyond loopback is refused there, exit 2), and listening_socket.cc binds them: one reading
// of the text, so that what the check vouched for is what gets bound.
#pragma once

#include <sys/socket.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cnp::listen {

struct TcpListenAddress {
  std::string host_port;  // the address without its scheme, as messages show it
  std::string host;  // without brackets; empty: every address (":7070")
  int port = 0;      // 0: the system picks one
};

// "host:port", "[v6]:port", ":port", with or without gRPC's "dns:///", "ipv4:" or "ipv6:"
// scheme. INVALID_ARGUMENT saying how to write it otherwise.
absl::StatusOr<TcpListenAddress> ParseTcpListenAddress(const std::string& address);

// What `address` resolves to for listening (getaddrinfo with AI_PASSIVE: "localhost" is
// 127.0.0.1 and ::1, "" and "0.0.0.0" every address), each with `address.port`, in
// getaddrinfo's order. The check and the listener both take their addresses from here.
// INVALID_ARGUMENT naming the address when the host does not resolve.
struct PassiveAddress {
  sockaddr_storage addr{};
  socklen_t length = 0;
  int family = AF_UNSPEC;
};
absl::StatusOr<std::vector<PassiveAddress>> ResolveForListening(const TcpListenAddress& address);

// Whether every address the server will listen on for `address` is this host's loopback: the
// addresses of the sockets systemd passed that it names when there are any (what systemd bound,
// not what --listen says, decides), else those `host` resolves to for listening (getaddrinfo
// with AI_PASSIVE, as the listener binds them: "localhost" is 127.0.0.1 and ::1, "" and
// "0.0.0.0" are every address). INVALID_ARGUMENT when the host does not resolve.
absl::StatusOr<bool> ListensOnLoopbackOnly(const std::string& address);

}  // namespace cnp::listen
