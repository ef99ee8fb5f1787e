#include "service/config/server_settings.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/closest_name.h"
#include "common/command_line_flags.h"
#include "service/config/server_flags.h"

namespace cnp::config {
namespace {

const ListFlag kListFlags[] = {
    {.name = "listen"},
    {.name = "python_path"},
    {.name = "allow_module", .without_it = "without it every module on the Python path may run"},
    {.name = "preload_module"},
    {.name = "couchdb_allow"},
    {.name = "allow_uid"},
    {.name = "config", .comma_separated = false, .example = "/etc/cnp/cnp-server.yaml"},
};

}  // namespace

absl::Span<const ListFlag> ListFlags() { return kListFlags; }

bool IsRepeatable(absl::string_view name) {
  return name != "config" && std::any_of(std::begin(kListFlags), std::end(kListFlags),
                                         [name](const ListFlag& flag) { return flag.name == name; });
}

bool DefinedHere(absl::string_view file) { return IsServerFlagsFile(file); }

bool IsServerSetting(const absl::CommandLineFlag& flag) {
  return DefinedHere(flag.Filename()) && flag.Name() != "config";
}

std::vector<std::string> ServerSettingNames() {
  std::vector<std::string> settings;
  for (const auto& [flag_name, flag] : absl::GetAllFlags()) {
    if (IsServerSetting(*flag)) settings.push_back(std::string(flag_name));
  }
  return settings;
}

std::optional<std::string> ClosestSetting(const std::string& name) {
  std::optional<std::string> meant = ClosestName(name, ServerSettingNames());
  if (meant.has_value()) return DashedFlagName(*meant);
  return std::nullopt;
}

bool RefusesEmptyValue(const absl::CommandLineFlag& flag) {
  return flag.IsOfType<std::string>() && flag.Name() != "adapter_settings";
}

}  // namespace cnp::config
