#include "service/listen/listen_address.h"

#include <netdb.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/loopback.h"
#include "service/listen/inherited_sockets.h"

namespace cnp::listen {

absl::StatusOr<TcpListenAddress> ParseTcpListenAddress(const std::string& address) {
  std::string host_port = address;
  for (const char* scheme : {"dns:///", "ipv4:", "ipv6:"}) {
    if (absl::StartsWith(host_port, scheme)) host_port = host_port.substr(std::strlen(scheme));
  }
  TcpListenAddress parsed{.host_port = host_port};
  std::string port_text;
  if (absl::StartsWith(host_port, "[")) {
    const size_t close = host_port.find("]:");
    if (close == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad address '", host_port, "': use [v6]:port"));
    }
    parsed.host = host_port.substr(1, close - 1);
    port_text = host_port.substr(close + 2);
  } else {
    const size_t colon = host_port.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad address '", host_port, "': use unix:/path or host:port"));
    }
    parsed.host = host_port.substr(0, colon);
    port_text = host_port.substr(colon + 1);
  }
  if (!absl::SimpleAtoi(port_text, &parsed.port) || parsed.port < 0 || parsed.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in '", host_port, "'"));
  }
  return parsed;
}

absl::StatusOr<std::vector<PassiveAddress>> ResolveForListening(const TcpListenAddress& address) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(address.port);
  const char* node = address.host.empty() ? nullptr : address.host.c_str();
  if (int rc = ::getaddrinfo(node, service.c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve '", address.host, "' in ",
                                                   address.host_port, ": ", gai_strerror(rc)));
  }
  std::vector<PassiveAddress> resolved;
  for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
    // A name listed twice in /etc/hosts comes twice: its second bind would fail as taken.
    const bool repeated = std::any_of(resolved.begin(), resolved.end(), [ai](const PassiveAddress& r) {
      return r.length == ai->ai_addrlen && std::memcmp(&r.addr, ai->ai_addr, ai->ai_addrlen) == 0;
    });
    if (repeated) continue;
    PassiveAddress& a = resolved.emplace_back();
    std::memcpy(&a.addr, ai->ai_addr, ai->ai_addrlen);
    a.length = ai->ai_addrlen;
    a.family = ai->ai_family;
  }
  ::freeaddrinfo(found);
  return resolved;
}

absl::StatusOr<bool> ListensOnLoopbackOnly(const std::string& address) {
  absl::StatusOr<TcpListenAddress> parsed = ParseTcpListenAddress(address);
  if (!parsed.ok()) return parsed.status();
  if (std::vector<sockaddr_storage> passed =
          InheritedTcpSocketAddresses(parsed->port, parsed->host);
      !passed.empty()) {
    for (const sockaddr_storage& bound : passed) {
      if (!IsLoopbackAddress(reinterpret_cast<const sockaddr*>(&bound))) return false;
    }
    return true;
  }
  absl::StatusOr<std::vector<PassiveAddress>> resolved = ResolveForListening(*parsed);
  if (!resolved.ok()) return resolved.status();
  bool loopback = true;
  for (const PassiveAddress& a : *resolved) {
    loopback = loopback && IsLoopbackAddress(reinterpret_cast<const sockaddr*>(&a.addr));
  }
  return loopback;
}

}  // namespace cnp::listen
