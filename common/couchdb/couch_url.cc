#include "common/couchdb/couch_url.h"

#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace cnp::couchdb {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = absl::ascii_tolower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

std::string PercentDecode(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 && HexValue(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Splits "scheme://authority/rest" at the authority; npos when there is no "://".
struct Parts {
  absl::string_view scheme, userinfo, hostport, rest;
  bool has_userinfo = false;
};

std::optional<Parts> Split(absl::string_view url) {
  size_t scheme_end = url.find("://");
  if (scheme_end == absl::string_view::npos) return std::nullopt;
  Parts parts;
  parts.scheme = url.substr(0, scheme_end);
  absl::string_view after = url.substr(scheme_end + 3);
  // The last '@' of the URL ends the user info, even one in what looks like the path: a
  // password with an unencoded '/', '?', '#' or '@' must never end up in the host or the path,
  // where every message would show it. A CouchDB URL has no '@' of its own after the host.
  size_t at = after.rfind('@');
  if (at != absl::string_view::npos) {
    parts.has_userinfo = true;
    parts.userinfo = after.substr(0, at);
    after.remove_prefix(at + 1);
  }
  size_t authority_end = after.find_first_of("/?#");
  parts.hostport = after.substr(0, authority_end);
  parts.rest = authority_end == absl::string_view::npos ? "" : after.substr(authority_end);
  return parts;
}

// A path that steps out of itself, as libcurl or a proxy in front of CouchDB would resolve it:
// a "." or ".." segment, spelled plainly or percent-encoded, or an encoded "/" that a proxy may
// decode into a new segment. An allow-list prefix compares the text, so "/allowed/.." would pass
// for "/allowed" and reach "/".
bool StepsOutOfItself(absl::string_view path) {
  for (absl::string_view segment : absl::StrSplit(path, '/')) {
    const std::string decoded = PercentDecode(segment);
    if (decoded == "." || decoded == ".." || absl::StrContains(decoded, '/')) return true;
  }
  return false;
}

std::string PortProblem(absl::string_view port) {
  return absl::StrCat("has port \"", port, "\"; a port is a number from 1 to 65535");
}

// What is wrong with "host[:port]" or "[v6 address][:port]", or nothing. libcurl reports a
// port it cannot use only as "URL using bad/illegal format", at the first request, which read
// as CouchDB being unreachable.
std::optional<std::string> HostPortProblem(absl::string_view hostport) {
  absl::string_view host = hostport;
  std::optional<absl::string_view> port;
  if (absl::StartsWith(hostport, "[")) {
    const size_t close = hostport.find(']');
    if (close == absl::string_view::npos) return "has an IPv6 address without its closing \"]\"";
    host = hostport.substr(0, close + 1);
    absl::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (!absl::ConsumePrefix(&after, ":")) return "has text after its IPv6 address";
      port = after;
    }
  } else if (const size_t colon = hostport.rfind(':'); colon != absl::string_view::npos) {
    host = hostport.substr(0, colon);
    port = hostport.substr(colon + 1);
    if (absl::StrContains(host, ':')) {
      return "has more than one ':' in its host and port (an IPv6 address goes in brackets, "
             "as in http://[::1]:5984)";
    }
  }
  if (host.empty() || host == "[]") return "has no host";
  if (!port.has_value()) return std::nullopt;
  // An empty port is the scheme's (RFC 3986), as libcurl reads it.
  if (port->empty()) return std::nullopt;
  int value = 0;
  for (char c : *port) {
    if (c < '0' || c > '9' || value > 65535) return PortProblem(*port);
    value = value * 10 + (c - '0');
  }
  if (value < 1 || value > 65535) return PortProblem(*port);
  return std::nullopt;
}

}  // namespace

absl::StatusOr<CouchUrl> ParseCouchUrl(absl::string_view url) {
  std::optional<Parts> parts = Split(url);
  if (!parts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", RedactUrl(url), "\" is not a CouchDB URL such as http://localhost:5984"));
  }
  std::string scheme = absl::AsciiStrToLower(parts->scheme);
  if (scheme != "http" && scheme != "https") {
    return absl::InvalidArgumentError(absl::StrCat("CouchDB URL \"", RedactUrl(url),
                                                   "\" must start with http:// or https://"));
  }
  if (parts->hostport.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CouchDB URL \"", RedactUrl(url), "\" has no host"));
  }
  if (std::optional<std::string> problem = HostPortProblem(parts->hostport)) {
    return absl::InvalidArgumentError(
        absl::StrCat("CouchDB URL \"", RedactUrl(url), "\" ", *problem));
  }
  if (absl::StrContains(parts->rest, '?') || absl::StrContains(parts->rest, '#')) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CouchDB URL \"", RedactUrl(url), "\" must not have a query or fragment"));
  }
  if (StepsOutOfItself(parts->rest)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CouchDB URL \"", RedactUrl(url),
        "\" has a \".\" or \"..\" path segment or an encoded \"/\": give the path as it is"));
  }
  CouchUrl out;
  absl::string_view path = parts->rest;
  while (absl::ConsumeSuffix(&path, "/")) {
  }
  out.base = absl::StrCat(scheme, "://", parts->hostport, path);
  if (parts->has_userinfo) {
    size_t colon = parts->userinfo.find(':');
    out.username = PercentDecode(parts->userinfo.substr(0, colon));
    if (colon != absl::string_view::npos) {
      out.password = PercentDecode(parts->userinfo.substr(colon + 1));
    }
  }
  return out;
}

std::string RedactUrl(absl::string_view url) {
  std::optional<Parts> parts = Split(url);
  if (!parts || !parts->has_userinfo) {
    // Without "://" the text may still hide a password: keep only what is surely safe.
    if (!parts && absl::StrContains(url, '@')) return "<URL hidden: it may hold a password>";
    return std::string(url);
  }
  return absl::StrCat(parts->scheme, "://", parts->hostport, parts->rest);
}

std::string RedactCredentials(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (true) {
    size_t scheme_end = text.find("://");
    if (scheme_end == absl::string_view::npos) break;
    size_t authority = scheme_end + 3;
    absl::StrAppend(&out, text.substr(0, authority));
    text.remove_prefix(authority);
    size_t token_end = text.find_first_of(" \t\r\n");
    size_t at = text.substr(0, token_end).rfind('@');
    if (at != absl::string_view::npos) text.remove_prefix(at + 1);
  }
  absl::StrAppend(&out, text);
  return out;
}

}  // namespace cnp::couchdb
