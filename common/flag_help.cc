#include "common/flag_help.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"

namespace cnp {
namespace {

constexpr size_t kWidth = 80;
constexpr absl::string_view kHelpIndent = "      ";

// What the flag's value looks like, for `--name=VALUE`; empty for a switch.
std::string ValueName(const absl::CommandLineFlag& flag) {
  if (flag.IsOfType<bool>()) return "";
  if (flag.IsOfType<absl::Duration>()) return "DURATION";
  if (flag.IsOfType<int>() || flag.IsOfType<int64_t>() || flag.IsOfType<uint64_t>() ||
      flag.IsOfType<int32_t>() || flag.IsOfType<uint32_t>() || flag.IsOfType<double>()) {
    return "N";
  }
  if (flag.IsOfType<std::vector<std::string>>()) return "VALUE[,VALUE...]";
  return "VALUE";
}

void AppendWrapped(absl::string_view text, std::string& out) {
  size_t column = 0;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipWhitespace())) {
    if (column > 0 && column + 1 + word.size() > kWidth) {
      out += '\n';
      column = 0;
    }
    if (column == 0) {
      absl::StrAppend(&out, kHelpIndent);
      column = kHelpIndent.size();
    } else {
      out += ' ';
      ++column;
    }
    absl::StrAppend(&out, word);
    column += word.size();
  }
  out += '\n';
}

}  // namespace

bool HelpAsked(int argc, char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") return false;
    if (arg == "-h") return true;
    // absl takes flags with one dash or two, and has a family of help flags (--helpfull,
    // --helpshort, --helpon=FILE, --helpmatch=TEXT, --helppackage, ...). Any of them reaching absl
    // would print absl's listing, which knows our flags by other names or finds none of them
    // ("No flags matched"): every spelling gets ours.
    if (absl::StartsWith(arg, "-")) {
      absl::string_view name = arg.substr(absl::StartsWith(arg, "--") ? 2 : 1);
      if (absl::StartsWith(name, "help")) return true;
    }
  }
  return false;
}

std::string FlagHelp(absl::string_view usage, absl::FunctionRef<bool(absl::string_view)> ours) {
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (ours(flag->Filename())) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(),
            [](const auto* a, const auto* b) { return a->Name() < b->Name(); });
  std::string out(usage);
  if (!out.empty() && out.back() != '\n') out += '\n';
  out += "\nFlags (each may also be written with underscores: --python_path is --python-path):\n";
  for (const absl::CommandLineFlag* flag : flags) {
    std::string line = absl::StrCat("  --", absl::StrReplaceAll(flag->Name(), {{"_", "-"}}));
    if (std::string value = ValueName(*flag); !value.empty()) absl::StrAppend(&line, "=", value);
    const std::string default_value = flag->DefaultValue();
    if (!default_value.empty() && !(flag->IsOfType<bool>() && default_value == "false")) {
      absl::StrAppend(&line, "  (default: ", default_value, ")");
    }
    absl::StrAppend(&out, line, "\n");
    AppendWrapped(flag->Help(), out);
  }
  // Not absl flags of ours, so the loop above never listed them (found by a review): both
  // programs answer them before reading any other flag (HelpAsked, VersionAsked).
  out += "  --help, -h\n";
  // absl's other help flags are answered with this text too (HelpAsked), so they are no
  // unknown flags; said here so that --help names every flag a program accepts.
  AppendWrapped("this text; so do --helpfull, --helpshort, --helpon=X and --helpmatch=X", out);
  out += "  --version\n";
  AppendWrapped("print the program's version and exit", out);
  return out;
}

}  // namespace cnp
