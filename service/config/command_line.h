// cnp-server's command line, read in two steps around the config file: first the repeatable
// settings and --config are taken out (the file is read next), then the rest is judged before
// absl parses it, so that a bad flag exits 2 saying what to write. Internal to service/config.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/list_flags.h"
#include "service/config/setting_sources.h"

namespace cnp::config {

// The list flags' values (to sources.repeated) and --config (to sources.config_file) out of the
// command line; the rest is left for absl.
absl::StatusOr<SplitCommandLine> SplitArgs(int argc, char** argv, Sources& sources);

// The command line's own settings, read before absl reads them (common/command_line_flags.h):
// an unknown flag, a setting given no value or one it cannot take exits 2 saying what to write.
// `others` is argv for absl, names in its spelling. absl's own flags (--flagfile, --undefok...)
// are unknown flags here too: --help does not list them, and they would set or skip settings
// past these checks.
absl::Status CheckCommandLineFlags(const std::vector<std::string>& others);

}  // namespace cnp::config
