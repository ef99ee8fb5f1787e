#include "common/command_line_flags.h"

#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/closest_name.h"

namespace cnp {

absl::Status JudgeCommandLineFlags(const std::vector<std::string>& argv,
                                   const std::function<bool(const absl::CommandLineFlag&)>& ours,
                                   const std::function<absl::Status(const WrittenFlag&)>& judge) {
  const auto find_ours = [&](const std::string& name) -> absl::CommandLineFlag* {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    return flag != nullptr && ours(*flag) ? flag : nullptr;
  };
  for (size_t i = 1; i < argv.size(); ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (!absl::ConsumePrefix(&arg, "-")) continue;  // a stray argument: refused after absl
    absl::ConsumePrefix(&arg, "-");
    const size_t equals = arg.find('=');
    WrittenFlag written;
    written.name = std::string(arg.substr(0, equals));
    if (written.name.empty()) continue;  // "-" or "--=x": absl's to judge
    written.flag = find_ours(written.name);
    if (written.flag == nullptr) {
      const absl::CommandLineFlag* negated =
          absl::StartsWith(written.name, "no") ? find_ours(written.name.substr(2)) : nullptr;
      if (negated != nullptr && negated->IsOfType<bool>()) {
        if (equals == absl::string_view::npos) continue;  // --noinsecure
        // absl refuses --noinsecure=true with its own exit 1; a mistake in a flag is exit 2.
        const std::string positive = DashedFlagName(written.name.substr(2));
        return absl::InvalidArgumentError(absl::StrCat(
            "--", DashedFlagName(written.name), " takes no value; write --", positive,
            "=false or --no", positive));
      }
    } else if (equals != absl::string_view::npos) {
      written.value = std::string(arg.substr(equals + 1));
    } else if (!written.flag->IsOfType<bool>() && i + 1 < argv.size()) {
      written.value = argv[++i];
      written.value_is_next_argument = true;
    }
    if (absl::Status judged = judge(written); !judged.ok()) return judged;
  }
  return absl::OkStatus();
}

absl::Status UnknownFlagError(const std::string& name, const std::vector<std::string>& candidates,
                              const std::string& program) {
  const std::optional<std::string> meant = ClosestName(name, candidates);
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown flag --", DashedFlagName(name),
      meant.has_value() ? absl::StrCat("; did you mean --", DashedFlagName(*meant), "?") : "",
      " (", program, " --help lists every flag)"));
}

std::string DashedFlagName(std::string name) {
  return absl::StrReplaceAll(name, {{"_", "-"}});
}

}  // namespace cnp
