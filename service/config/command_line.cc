#include "service/config/command_line.h"

#include "absl/flags/commandlineflag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/command_line_flags.h"
#include "service/config/server_settings.h"

namespace cnp::config {

absl::StatusOr<SplitCommandLine> SplitArgs(int argc, char** argv, Sources& sources) {
  absl::StatusOr<SplitCommandLine> split = TakeListFlags(argc, argv, ListFlags());
  if (!split.ok()) return split.status();
  sources.on_command_line = split->named;
  for (auto& [name, values] : split->lists) {
    if (name != "config") {
      sources.repeated[name] = std::move(values);
      continue;
    }
    for (const std::string& file : values) {
      if (!sources.config_file.empty() && sources.config_file != file) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--config was given twice (", sources.config_file, " and ", file,
            "); one file holds the settings"));
      }
      sources.config_file = file;
    }
  }
  split->lists.clear();
  return split;
}

absl::Status CheckCommandLineFlags(const std::vector<std::string>& others) {
  return JudgeCommandLineFlags(others, IsServerSetting,
                               [](const WrittenFlag& written) -> absl::Status {
    if (written.flag == nullptr) {
      return UnknownFlagError(written.name, ServerSettingNames(), "cnp-server");
    }
    return CheckFlagValue(written, RefusesEmptyValue(*written.flag));
  });
}

}  // namespace cnp::config
