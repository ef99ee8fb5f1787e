// Flags whose values add up, as cnp-server and cnp-adapter take them: "--python-path=A
// --python-path B,C" is A, B and C. absl keeps only the last value of a repeated flag and knows
// flag names only as they are defined (--python_path), so both programs take these flags out
// of the command line before absl parses the rest, here, the one way.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace cnp {

struct ListFlag {
  // As absl spells it (allow_module); --allow-module, --allow_module and -allow-module name it.
  std::string name;
  // What leaving the flag out means, said when it is given no value: an empty value (an unset
  // shell variable) must never quietly mean the default, which for --allow-module is "every
  // module may run".
  std::string without_it;
  // Each value is a comma-separated list (an empty element, "a,,b", is refused); false takes a
  // value whole (a file name may hold a comma).
  bool comma_separated = true;
  // Shown in the error for a missing value: "write --NAME=<example>".
  std::string example = "VALUE";
};

struct SplitCommandLine {
  // Each list flag given, by absl's name, with its values in the order written.
  std::map<std::string, std::vector<std::string>> lists;
  // argv[0] and every other argument, flag names in absl's spelling (--max_queue=3, -workers 2),
  // for absl::ParseCommandLine; values and anything after "--" as written.
  std::vector<std::string> others;
  // Every flag named on the command line, list or not, by absl's name.
  std::set<std::string> named;

  // `others` as the argv absl::ParseCommandLine takes; it points into `others`.
  std::vector<char*> ArgvForAbsl();
};

// Takes `flags` out of argv. A value is written --name=VALUE or --name VALUE (with one dash or
// two); the next argument is no value when it starts with '-'. INVALID_ARGUMENT naming the flag
// when one is given no value: "--allow-module=", "--allow-module=,", a trailing
// "--allow-module", or "--allow-module --workers=2"; and when a value has an empty element
// ("--allow-module=a,,b", "a,"). Arguments after "--" are not flags.
absl::StatusOr<SplitCommandLine> TakeListFlags(int argc, const char* const* argv,
                                               absl::Span<const ListFlag> flags);

}  // namespace cnp
