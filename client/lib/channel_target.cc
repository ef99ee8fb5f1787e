#include "client/lib/channel_target.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/couchdb/couch_url.h"
#include "common/loopback.h"
#include "common/unix_target.h"

namespace cnp::client {
namespace {

enum class Family { kIpv4, kIpv6 };

// "10.0.0.5:7070" or "[fd00::5]:7070" -> its family; anything else (a name, no port) is not an
// address gRPC's ipv4:/ipv6: lists accept.
absl::StatusOr<Family> AddressFamily(absl::string_view address) {
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == absl::string_view::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port == 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "' in the --target list has no port (write host:port)"));
  }
  std::string host(address.substr(0, colon));
  unsigned char buffer[16];
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    if (::inet_pton(AF_INET6, host.c_str(), buffer) == 1) return Family::kIpv6;
  } else if (::inet_pton(AF_INET, host.c_str(), buffer) == 1) {
    return Family::kIpv4;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "'", address, "' in the --target list is not an IP address with a port; a list takes "
      "addresses (10.0.0.5:7070,10.0.0.6:7070 or [fd00::5]:7070,[fd00::6]:7070), and "
      "dns:///NAME:PORT balances over every address a name resolves to"));
}

// "127.0.0.1:7070", "[::1]:7070", "localhost:7070", "localhost" -> whether the host is loopback
// (common/loopback.h).
bool HostIsLoopback(absl::string_view host_port) {
  host_port = absl::StripAsciiWhitespace(host_port);
  if (absl::StartsWith(host_port, "[")) {
    const size_t close = host_port.find(']');
    if (close == absl::string_view::npos) return false;
    return IsLoopbackHost(host_port.substr(0, close + 1));
  }
  if (std::count(host_port.begin(), host_port.end(), ':') > 1) {
    return IsLoopbackHost(host_port);  // a bare IPv6 address, no port
  }
  return IsLoopbackHost(host_port.substr(0, host_port.find(':')));
}

}  // namespace

bool TargetStaysOnThisHost(absl::string_view target) {
  target = absl::StripAsciiWhitespace(target);
  if (IsUnixTarget(target)) return true;
  absl::string_view addresses = target;
  if (absl::ConsumePrefix(&addresses, "ipv4:") || absl::ConsumePrefix(&addresses, "ipv6:")) {
    addresses = absl::StripLeadingAsciiWhitespace(addresses);
    while (absl::ConsumePrefix(&addresses, "/")) {
    }
  } else if (absl::ConsumePrefix(&addresses, "dns:")) {
    // dns:[//authority/]host[:port]: the authority is the DNS server to ask, not the target.
    if (absl::ConsumePrefix(&addresses, "//")) {
      const size_t slash = addresses.find('/');
      if (slash == absl::string_view::npos) return false;
      addresses.remove_prefix(slash + 1);
    }
  } else if (absl::StrContains(target, "://")) {
    return false;  // another resolver's scheme: nothing here can tell where it leads
  }
  std::vector<absl::string_view> list = absl::StrSplit(addresses, ',', absl::SkipWhitespace());
  if (list.empty()) return false;
  return std::all_of(list.begin(), list.end(), HostIsLoopback);
}

bool NamesReplicas(absl::string_view target) {
  if (IsUnixTarget(target)) return false;
  return absl::StrContains(target, ',') || absl::StartsWith(target, "dns:");
}

absl::Status CheckNotABarePath(absl::string_view target) {
  // Named as either place gives it: --target, or CNP_TARGET where no --target is given.
  if (absl::StartsWith(target, "~/")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the target ", target, " (--target or CNP_TARGET) is a file path, with a ~ nothing "
        "expands; a unix socket is named unix:PATH with the full path (unix:/home/USER/",
        target.substr(2), ")"));
  }
  for (absl::string_view start : {"/", "./", "../"}) {
    if (!absl::StartsWith(target, start)) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        "the target ", target, " (--target or CNP_TARGET) is a file path; a unix socket is "
        "named unix:PATH (here unix:", target, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ChannelTargetUri(absl::string_view target, size_t rotate) {
  if (absl::Status path = CheckNotABarePath(target); !path.ok()) return path;
  // The socket checks before connecting look at a unix target as given: spaces around it would
  // let it slip past them.
  if (target != absl::StripAsciiWhitespace(target) &&
      absl::StartsWith(absl::StripAsciiWhitespace(target), "unix")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--target=\"", target, "\" has spaces around it"));
  }
  // A URL (CouchDB's, most likely) where cnp-server's address belongs: gRPC would take
  // "http://h:5984" as the DNS name "http" and fail with its own words.
  for (absl::string_view scheme : {"http://", "https://"}) {
    if (absl::StartsWith(absl::AsciiStrToLower(target), scheme)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--target=", couchdb::RedactUrl(target),
          " is a URL; cnp-server's address is unix:PATH or HOST:PORT (a CouchDB URL goes where "
          "the command takes one)"));
    }
  }
  if (absl::StartsWith(target, "unix-abstract:")) {
    // Any local user may bind an abstract name first, and no owner or mode protects it.
    return absl::InvalidArgumentError(absl::StrCat(
        "--target=", target, ": abstract unix sockets are refused (anyone on this host could "
        "take the name); cnp-server listens on unix:PATH"));
  }
  if (IsUnixTarget(target)) {
    if (absl::StrContains(target, ',')) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--target=", target, ": a list of servers takes TCP addresses, not unix sockets"));
    }
    // The socket checks look at the path read here; gRPC must connect to that file.
    if (absl::Status path = UnixSocketPath(target).status(); !path.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--target=", path.message()));
    }
    return std::string(target);
  }
  if (!absl::StrContains(target, ',') || absl::StartsWith(target, "ipv4:") ||
      absl::StartsWith(target, "ipv6:") || absl::StartsWith(target, "dns:")) {
    return std::string(target);
  }
  std::vector<absl::string_view> addresses =
      absl::StrSplit(target, ',', absl::SkipWhitespace());
  std::vector<std::string> stripped;
  std::optional<Family> family;
  for (absl::string_view address : addresses) {
    address = absl::StripAsciiWhitespace(address);
    absl::StatusOr<Family> this_family = AddressFamily(address);
    if (!this_family.ok()) return this_family.status();
    if (family.has_value() && *family != *this_family) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--target=", target, " mixes IPv4 and IPv6 addresses; gRPC takes one family per list "
          "(or use dns:///NAME:PORT)"));
    }
    family = *this_family;
    stripped.emplace_back(address);
  }
  if (stripped.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--target=", target, " names no address"));
  }
  std::rotate(stripped.begin(), stripped.begin() + rotate % stripped.size(), stripped.end());
  return absl::StrCat(*family == Family::kIpv4 ? "ipv4:" : "ipv6:", absl::StrJoin(stripped, ","));
}

}  // namespace cnp::client
