// "module.sub.function" or "module.sub.function|version", as design documents name functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/call_limit.h"

namespace cnp::worker {

// Names longer than kMaxFunctionNameBytes (common/call_limit.h) are refused before anything
// else looks at them.
using ::cnp::kMaxFunctionNameBytes;

struct FunctionName {
  std::string path;       // "module.sub.function"
  std::string module;     // "module.sub"
  std::string attribute;  // "function"
  std::optional<int64_t> version;  // after "|"; none when absent or empty
};

// Splits on the first "|". The path needs at least two dot-separated parts, each a Python
// identifier. INVALID_ARGUMENT carries couch-named-python's message where it had one
// ("ValueError: Invalid function path"); a name that is too long or holds a NUL or another
// control character is refused whole, never truncated. Needs the interpreter only for names
// with non-ASCII letters (Python decides what an identifier is).
absl::StatusOr<FunctionName> ParseFunctionName(absl::string_view name);

// A module to import ahead of any call ("myviews.towns", cnp-server's --preload-module), as a
// FunctionName whose path and module are it and whose attribute is empty, for the module
// policy's checks. Each dotted part a Python identifier, no "|version", at most
// kMaxFunctionNameBytes, no control characters; else INVALID_ARGUMENT saying which.
absl::StatusOr<FunctionName> ParseModuleName(absl::string_view module);

// A dunder name ("__setattr__", "__main__"): it reaches the machinery of modules rather than
// the operator's functions.
bool IsDunder(absl::string_view part);

// The dotted parts of `path` that are dunder names.
std::vector<std::string> DunderParts(absl::string_view path);

// `name` fit for a message, a reply field or a log line: control characters escaped, cut
// after `max_bytes` with its full length said. A valid name comes back unchanged.
std::string NameForMessage(absl::string_view name, size_t max_bytes = kMaxFunctionNameBytes);

// couch-named-python's message for a version that does not match, in either direction.
std::string VersionMismatchMessage(std::optional<int64_t> loaded, std::optional<int64_t> expected);

// That message for a name without "|version" whose function has @version(`loaded`), followed by
// the name to use instead ("path|loaded", what `cnp resolve path` prints).
std::string UnversionedNameMessage(absl::string_view path, int64_t loaded);

}  // namespace cnp::worker
