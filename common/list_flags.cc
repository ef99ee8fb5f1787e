#include "common/list_flags.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace cnp {
namespace {

absl::Status MissingValue(const ListFlag& flag) {
  const std::string dashed = absl::StrReplaceAll(flag.name, {{"_", "-"}});
  std::string message = absl::StrCat("--", dashed, " was given no value; write --", dashed, "=",
                                     flag.example, ", or leave the flag out");
  if (!flag.without_it.empty()) absl::StrAppend(&message, " (", flag.without_it, ")");
  return absl::InvalidArgumentError(message);
}

absl::Status EmptyElement(const ListFlag& flag, absl::string_view value) {
  const std::string dashed = absl::StrReplaceAll(flag.name, {{"_", "-"}});
  return absl::InvalidArgumentError(absl::StrCat(
      "--", dashed, "=", value, " has an empty element (two commas together, or one at an "
      "end); write the values separated by single commas"));
}

}  // namespace

std::vector<char*> SplitCommandLine::ArgvForAbsl() {
  std::vector<char*> argv;
  argv.reserve(others.size());
  for (std::string& arg : others) argv.push_back(arg.data());
  return argv;
}

absl::StatusOr<SplitCommandLine> TakeListFlags(int argc, const char* const* argv,
                                               absl::Span<const ListFlag> flags) {
  SplitCommandLine split;
  if (argc > 0) split.others.emplace_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") {
      for (; i < argc; ++i) split.others.emplace_back(argv[i]);
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {  // a value, a positional argument, or "-"
      split.others.emplace_back(arg);
      continue;
    }
    const size_t dashes = arg[1] == '-' ? 2 : 1;
    const size_t eq = arg.find('=');
    const std::string name = absl::StrReplaceAll(
        arg.substr(dashes, eq == absl::string_view::npos ? absl::string_view::npos : eq - dashes),
        {{"-", "_"}});
    split.named.insert(name);
    const auto flag = std::find_if(flags.begin(), flags.end(),
                                   [&name](const ListFlag& f) { return f.name == name; });
    if (flag == flags.end()) {
      // The dashes before the name stay as written: "-500ms", a value, keeps its meaning.
      split.others.push_back(absl::StrCat(arg.substr(0, dashes), name,
                                          eq == absl::string_view::npos ? "" : arg.substr(eq)));
      continue;
    }
    absl::string_view value;
    if (eq != absl::string_view::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc && !absl::StartsWith(argv[i + 1], "-")) {
      value = argv[++i];
    }
    std::vector<std::string>& values = split.lists[name];
    const size_t before = values.size();
    bool empty_element = false;
    if (flag->comma_separated) {
      for (absl::string_view v : absl::StrSplit(value, ',')) {
        if (v.empty()) {
          empty_element = true;
        } else {
          values.emplace_back(v);
        }
      }
    } else if (!value.empty()) {
      values.emplace_back(value);
    }
    if (values.size() == before) return MissingValue(*flag);
    // "--allow-module=$A,$B" with $B unset: a list that quietly lost a value.
    if (empty_element) return EmptyElement(*flag, value);
  }
  return split;
}

}  // namespace cnp
