// The name a misspelt one most likely meant, for "did you mean ...?" in the messages of
// cnp-server's settings, cnp-adapter's flags and the design documents' YAML keys.
#pragma once

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace cnp {

// Edits (insertions, deletions, substitutions, and swaps of two neighbouring letters: "veiws"
// is one from "views") that turn `a` into `b`.
size_t EditDistance(absl::string_view a, absl::string_view b);

// The candidate closest to `name` by edits, if it is close: at most two edits, and at most one
// per three letters of `name`, so that `colour` gets no guess. Of two equally close, the first
// in alphabetical order (the same suggestion every time).
std::optional<std::string> ClosestName(absl::string_view name,
                                       absl::Span<const std::string> candidates);

}  // namespace cnp
