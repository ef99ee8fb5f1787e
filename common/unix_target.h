// The socket path of a "unix:" target, read as gRPC (1.51) reads it, so that what cnp-server
// binds, and the file whose owner cnp-adapter and cnp check before connecting, is the file gRPC
// connects to. gRPC parses a target as a URI:
//
//   unix:/run/cnp/cnp.sock    -> /run/cnp/cnp.sock
//   unix:///run/cnp/cnp.sock  -> /run/cnp/cnp.sock   (an empty host)
//   unix:cnp.sock             -> cnp.sock, relative to the working directory
//   unix://host/cnp.sock      -> refused by gRPC ("authority-based URIs not supported")
//
// gRPC also percent-decodes the path (unix:/a%20b connects to "/a b"), ends it at '?' or '#',
// splits it at ',' into several sockets, and reads a path starting with "//" as a host once it
// has written the address back out (unix:////tmp/x connects to /x). A target using any of these
// is refused here rather than copied: the checks would look at one file and gRPC connect to
// another. "unix-abstract:" is another scheme, not this one.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cnp {

// Whether `target` is in gRPC's "unix:" scheme (case-sensitive, as gRPC's resolvers are),
// well-formed or not.
bool IsUnixTarget(absl::string_view target);

// The path gRPC connects to for `target`; INVALID_ARGUMENT naming the target, and what to write
// instead, for one that is not a unix: target or that gRPC would read otherwise than as one file.
absl::StatusOr<std::string> UnixSocketPath(absl::string_view target);

}  // namespace cnp
