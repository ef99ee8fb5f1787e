// Reading a bearer token (or any secret) from a file: shared by cnp-server, cnp-adapter and cnp.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cnp {

// The content of a file only its owner may read, e.g. a TLS private key; `what` names it in
// messages ("the private key"). Refused when the file is not a regular file, can be read or
// written by its group or others (a secret anyone on the host can read protects nothing), or
// belongs to neither root nor this process's user (that user holds it; common/code_ownership.h):
// the message says how to fix it and never shows the secret.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, absl::string_view what);

// A bearer token: such a file's content without surrounding whitespace, not empty.
absl::StatusOr<std::string> ReadAuthToken(const std::string& path);

}  // namespace cnp
