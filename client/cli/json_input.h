// Reading JSON the way a user has it at hand: a file or stdin holding one JSON value, a JSON
// array of values, or newline-delimited JSON.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cnp::cli {

// The deepest nesting of arrays and objects accepted, as in cnp-server and cnp-adapter. Input is
// read with recursion bounded by it, so a deeper document is an error, never a stack overflow.
inline constexpr int kMaxJsonDepth = 4096;

// The whole content of `path` ("-" means stdin); INVALID_ARGUMENT past 256 MiB, more than one
// call to cnp-server can carry.
absl::StatusOr<std::string> ReadInput(const std::string& path);

// The JSON values in `text`, each exactly as written. A single top-level array is spread
// into its elements when `spread_array` is set. Errors name the line and column; a value nested
// deeper than kMaxJsonDepth is one.
absl::StatusOr<std::vector<std::string>> SplitJsonValues(const std::string& text, bool spread_array);

// Checks that `text` holds exactly one JSON value and returns it as written.
absl::StatusOr<std::string> SingleJsonValue(const std::string& text);

}  // namespace cnp::cli
