// Reading a bearer token (or any secret) from a file: shared by cnp-server, cnp-adapter and cnp.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cnp {

// The content of a secret file, e.g. a TLS private key; `what` names it in messages ("the
// private key"). Refused when the file is not a regular file, can be read or written by its
// group or others (a secret others on the host can read protects nothing), or belongs to
// neither root nor this process's user (that user holds it; common/code_ownership.h). The
// message says how to fix it, also when the file cannot be opened for want of permission (a
// root-owned 0600 key, which a server running as its own user cannot read), and never shows
// the secret.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, absl::string_view what);

// A bearer token, as a client sends it: such a file's content without surrounding whitespace,
// one line of visible ASCII.
absl::StatusOr<std::string> ReadAuthToken(const std::string& path);

// The bearer tokens a server accepts: such a file's lines, each one token (surrounding
// whitespace and blank lines ignored), at least one, each at least kMinAuthTokenBytes long; a
// line starting with '#' is refused (it would be a token, not a comment).
// Several are how a token is rotated without refusing a call: the new one is added, the clients
// move over, the old one is removed.
absl::StatusOr<std::vector<std::string>> ReadAuthTokens(const std::string& path);

// The shortest token a server accepts. A token is all that stands between a caller and running
// the allowed functions, and a call is cheap to try: `changeme` or a word falls to a caller who
// tries many, where 16 characters of `openssl rand -hex 32` do not.
inline constexpr size_t kMinAuthTokenBytes = 16;

}  // namespace cnp
