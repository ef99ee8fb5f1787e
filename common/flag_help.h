// --help for cnp-server and cnp-adapter, whose settings are absl flags. absl lists a flag by the
// name it was defined with, a C++ identifier (--python_path), while everyone uses the dashed
// spelling (--python-path), which both programs accept along with the other. So absl's listing
// told users a spelling nobody writes; this one lists every flag as it is used.
#pragma once

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"

namespace cnp {

// Whether the command line asks for help the way absl's programs are asked: -h, or any of absl's
// help flags with one dash or two (--help, --helpfull, --helpshort, --helpon=..., --helpmatch=...,
// --help=...). Arguments after "--" are not looked at.
bool HelpAsked(int argc, char* const* argv);

// `usage`, then every flag defined in a source file for which `ours(file)` holds, sorted by
// name, each as it is written on the command line with its default and its help, wrapped, and
// last --help and --version, which the programs answer themselves:
//
//   --call-timeout=DURATION  (default: 1m)
//       longest a call may run; its worker is then killed and replaced
std::string FlagHelp(absl::string_view usage, absl::FunctionRef<bool(absl::string_view)> ours);

}  // namespace cnp
