// cnp-server's settings as absl flags (server_flags.cc): which flags they are, which add up
// when repeated, and how a value of one is described in an error. Shared by the command line
// (command_line.cc), the config file (config_file.cc) and the checks of server_config.cc;
// internal to service/config.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/list_flags.h"

namespace cnp::config {

// The settings that add up when repeated (absl keeps only a flag's last value), and --config,
// taken with them from the command line.
absl::Span<const ListFlag> ListFlags();
// A setting that adds up when repeated (--config is none: it is given once).
bool IsRepeatable(absl::string_view name);

// Whether `file` (where a flag is defined, as absl records it) is where cnp-server's settings
// are (server_flags.h).
bool DefinedHere(absl::string_view file);
// Whether `flag` is one of cnp-server's own settings (--config itself is none).
bool IsServerSetting(const absl::CommandLineFlag& flag);
// The names of the server's settings, in absl's spelling.
std::vector<std::string> ServerSettingNames();
// The setting a misspelt key most likely meant (common/closest_name.h), dashed.
std::optional<std::string> ClosestSetting(const std::string& name);

// Whether an empty value of `flag` is refused: a string setting given as nothing (an unset
// shell variable, a template filled with nothing) would otherwise quietly mean its default,
// which for --auth-token-file or --tls-client-ca is "no check at all". The adapter's own
// --adapter-settings is the exception; it writes that one itself.
bool RefusesEmptyValue(const absl::CommandLineFlag& flag);


}  // namespace cnp::config
