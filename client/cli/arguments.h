// The command line of one cnp subcommand: --name=value options, bare --flags and positional
// arguments. Unknown options are errors, so a typo never silently changes what runs.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/lib/channel_security.h"

namespace cnp::cli {

struct Arguments {
  std::map<std::string, std::string> options;  // name without dashes -> value ("" for flags)
  std::vector<std::string> positional;

  bool Has(const std::string& name) const { return options.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const {
    auto it = options.find(name);
    return it == options.end() ? fallback : it->second;
  }
};

// `valued` options take a value (--name=value or --name value); `flags` take none. When "help"
// is a flag, -h means --help. Everything after "--" is positional.
absl::StatusOr<Arguments> ParseArguments(int argc, char** argv, const std::set<std::string>& valued,
                                         const std::set<std::string>& flags);
absl::StatusOr<Arguments> ParseArguments(const std::vector<std::string>& argv,
                                         const std::set<std::string>& valued,
                                         const std::set<std::string>& flags);

// `message` ending in " (see --help)", once.
std::string WithHelpHint(absl::string_view message);

// The value of the numeric option --`name`, `fallback` when it is absent; an error naming the
// option and `what` it needs when the value is not a whole number of at least `minimum`.
absl::StatusOr<int64_t> NumberOption(const Arguments& args, const std::string& name,
                                     int64_t fallback, int64_t minimum, const std::string& what);

// How every subcommand reaches the service: --target, and the TLS and token options of
// client/lib/channel_security.h (valued ones, and the bare --tls).
std::set<std::string> WithConnectionOptions(std::set<std::string> valued);
std::set<std::string> WithConnectionFlags(std::set<std::string> flags);
client::ChannelSecurity ConnectionSecurity(const Arguments& args);
// Their help lines.
extern const char kConnectionHelp[];

}  // namespace cnp::cli
