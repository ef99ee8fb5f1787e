// Debian's abseil is built with its own absl::string_view rather than an alias of
// std::string_view, so a view handed from one to the other is converted explicitly.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace cnp {

inline absl::string_view AbslView(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

inline std::string_view StdView(absl::string_view text) {
  return std::string_view(text.data(), text.size());
}

}  // namespace cnp
