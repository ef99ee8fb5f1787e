#include "common/unix_target.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace cnp {
namespace {

constexpr absl::string_view kScheme = "unix:";

absl::Status Refused(absl::string_view target, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "\"", target, "\": ", why, "; write unix:/PATH (or unix:///PATH) for one socket file"));
}

}  // namespace

bool IsUnixTarget(absl::string_view target) { return absl::StartsWith(target, kScheme); }

absl::StatusOr<std::string> UnixSocketPath(absl::string_view target) {
  absl::string_view path = target;
  if (!absl::ConsumePrefix(&path, kScheme)) return Refused(target, "not a unix: target");
  if (absl::ConsumePrefix(&path, "//")) {
    // unix://HOST/PATH: gRPC takes only an empty host, as in unix:///run/cnp.sock.
    if (!path.empty() && path.find_first_of("/?#") != 0) {
      return Refused(target, "gRPC takes no host in a unix: target, it would not connect");
    }
  }
  if (path.empty()) return Refused(target, "names no socket");
  if (absl::StartsWith(path, "//")) {
    return Refused(target, "gRPC reads a path starting with // as a host");
  }
  if (const size_t special = path.find_first_of("%?#,"); special != absl::string_view::npos) {
    return Refused(target, absl::StrCat("gRPC would read its '", path.substr(special, 1),
                                        "' (percent-decoding, a query, a fragment or a list "
                                        "of sockets) and connect to another file"));
  }
  return std::string(path);
}

}  // namespace cnp
