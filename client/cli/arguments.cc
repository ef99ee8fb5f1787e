#include "client/cli/arguments.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cnp::cli {

absl::StatusOr<Arguments> ParseArguments(int argc, char** argv, const std::set<std::string>& valued,
                                         const std::set<std::string>& flags) {
  Arguments args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-" || !absl::StartsWith(arg, "--")) {
      args.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      for (++i; i < argc; ++i) args.positional.push_back(argv[i]);
      break;
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (flags.count(name)) {
      if (has_value) return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      args.options[name] = "";
    } else if (valued.count(name)) {
      if (!has_value) {
        if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
        value = argv[++i];
      }
      args.options[name] = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown option --", name, " (see --help)"));
    }
  }
  return args;
}

}  // namespace cnp::cli
