#include "common/command_line_flags.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
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
    // --version is answered before flags are read (version.h), and not an absl flag of ours:
    // with a value it reached here as an unknown flag, which it is not.
    if (written.name == "version" && equals != absl::string_view::npos) {
      return absl::InvalidArgumentError("--version takes no value; write --version");
    }
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

std::string ExpectedFlagValue(const absl::CommandLineFlag& flag) {
  if (flag.IsOfType<int>() || flag.IsOfType<int64_t>()) return "a whole number";
  if (flag.IsOfType<bool>()) return "true or false";
  if (flag.IsOfType<absl::Duration>()) return "a duration such as 30s or 2m";
  return "a single value";
}

std::string OutOfWholeNumberRange(const absl::CommandLineFlag& flag, absl::string_view text) {
  int64_t least, most;
  if (flag.IsOfType<int>()) {
    least = std::numeric_limits<int>::min();
    most = std::numeric_limits<int>::max();
  } else if (flag.IsOfType<int64_t>()) {
    least = std::numeric_limits<int64_t>::min();
    most = std::numeric_limits<int64_t>::max();
  } else {
    return "";
  }
  absl::string_view digits = absl::StripAsciiWhitespace(text);
  const bool negative = absl::ConsumePrefix(&digits, "-");
  if (!negative) absl::ConsumePrefix(&digits, "+");
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), absl::ascii_isdigit)) {
    return "";
  }
  int64_t value = 0;
  if (absl::SimpleAtoi(text, &value) && value >= least && value <= most) return "";
  return negative ? absl::StrCat("too small (at least ", least, ")")
                  : absl::StrCat("too large (at most ", most, ")");
}

absl::Status CheckFlagValue(const WrittenFlag& written, bool refuses_empty) {
  absl::CommandLineFlag& flag = *written.flag;
  if (!written.value.has_value() && flag.IsOfType<bool>()) return absl::OkStatus();  // --insecure
  const std::string name = DashedFlagName(written.name);
  // absl sets the flag again from the same text right after.
  std::string ignored;
  if (!written.value.has_value() ||
      (written.value_is_next_argument && absl::StartsWith(*written.value, "--") &&
       !flag.ParseFrom(*written.value, &ignored))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", name, " was given no value; write --", name, "=",
        flag.DefaultValue().empty() ? "VALUE" : flag.DefaultValue()));
  }
  if (written.value->empty() && refuses_empty) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", name, "= is empty; give a value, or leave the flag out for its default"));
  }
  if (!flag.ParseFrom(*written.value, &ignored)) {
    if (std::string bound = OutOfWholeNumberRange(flag, *written.value); !bound.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, "=", *written.value, ": ", bound));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "--", name, "=", *written.value, ": expected ", ExpectedFlagValue(flag),
        flag.DefaultValue().empty()
            ? ""
            : absl::StrCat("; write e.g. --", name, "=", flag.DefaultValue(), " (the default)")));
  }
  return absl::OkStatus();
}

}  // namespace cnp
