// "module.sub.function" or "module.sub.function|version", as design documents name functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cnp::worker {

struct FunctionName {
  std::string path;       // "module.sub.function"
  std::string module;     // "module.sub"
  std::string attribute;  // "function"
  std::optional<int64_t> version;  // after "|"; none when absent or empty
};

// Splits on the first "|". The path needs at least two non-empty dot-separated parts.
// INVALID_ARGUMENT carries couch-named-python's message, e.g. "ValueError: Invalid function path".
absl::StatusOr<FunctionName> ParseFunctionName(absl::string_view name);

// couch-named-python's message for a version that does not match, in either direction.
std::string VersionMismatchMessage(std::optional<int64_t> loaded, std::optional<int64_t> expected);

}  // namespace cnp::worker
