// cnp's version: the one place it is written. cnp-server --version, cnp-adapter --version and
// cnp --version print it.
#pragma once

#include "absl/strings/string_view.h"

namespace cnp {

inline constexpr absl::string_view kCnpVersion = "0.1.0";

// Whether the command line asks for the version (--version or -version) before any "--".
inline bool VersionAsked(int argc, char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") return false;
    if (arg == "--version" || arg == "-version") return true;
  }
  return false;
}

}  // namespace cnp
