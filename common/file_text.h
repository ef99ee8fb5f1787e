// A whole file a user named on the command line (documents to map, a derive declaration, design
// document YAML, a CA bundle), or why it cannot be read, in words the user can act on:
// "cannot read docs.json: No such file or directory". Such a failure is bad input
// (INVALID_ARGUMENT: exit status 2 for every cnp command), not a failed call.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace cnp {

// With `max_bytes` >= 0 reading stops past max_bytes (at most max_bytes + 1 bytes are
// returned), so a caller can say "too large" without holding a huge file.
absl::StatusOr<std::string> ReadFileText(const std::string& path, int64_t max_bytes = -1);

}  // namespace cnp
