// Reading JSON the way a user has it at hand: a file or stdin holding one JSON value, a JSON
// array of values, or newline-delimited JSON.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cnp::cli {

// The whole content of `path` ("-" means stdin).
absl::StatusOr<std::string> ReadInput(const std::string& path);

// The JSON values in `text`, each exactly as written. A single top-level array is spread
// into its elements when `spread_array` is set. Errors name the line and column.
absl::StatusOr<std::vector<std::string>> SplitJsonValues(const std::string& text, bool spread_array);

// Checks that `text` holds exactly one JSON value and returns it as written.
absl::StatusOr<std::string> SingleJsonValue(const std::string& text);

}  // namespace cnp::cli
