// Files the commands read on the caller's machine and send in a request (YAML files; CouchDB's
// CA certificates are common/pem_file.h's): read with a bound, so a huge file or a device is
// never read into memory.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace cnp::client::upload {

// Reads at most max_bytes + 1 bytes of `path`; the caller tells a file over the limit by its
// size. NOT_FOUND when it cannot be read.
absl::StatusOr<std::string> ReadBounded(const std::string& path, int64_t max_bytes);

}  // namespace cnp::client::upload
