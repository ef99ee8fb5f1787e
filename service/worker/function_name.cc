#include "service/worker/function_name.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace cnp::worker {
namespace {

std::string Repr(std::optional<int64_t> version) {
  return version ? absl::StrCat(*version) : "None";
}

}  // namespace

absl::StatusOr<FunctionName> ParseFunctionName(absl::string_view name) {
  FunctionName result;
  absl::string_view path = name;
  if (size_t bar = name.find('|'); bar != absl::string_view::npos) {
    path = name.substr(0, bar);
    absl::string_view version = name.substr(bar + 1);
    if (!version.empty()) {
      // int() accepts surrounding whitespace, so the old server did too.
      int64_t number;
      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(version), &number)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "ValueError: invalid literal for int() with base 10: '", version, "'"));
      }
      result.version = number;
    }
  }
  std::vector<absl::string_view> parts = absl::StrSplit(path, '.');
  bool valid = parts.size() >= 2;
  for (absl::string_view part : parts) valid = valid && !part.empty();
  if (!valid) return absl::InvalidArgumentError("ValueError: Invalid function path");
  result.path = std::string(path);
  result.attribute = std::string(parts.back());
  parts.pop_back();
  result.module = absl::StrJoin(parts, ".");
  return result;
}

std::string VersionMismatchMessage(std::optional<int64_t> loaded, std::optional<int64_t> expected) {
  return absl::StrCat("ValueError: Loaded version ", Repr(loaded),
                      " did not match expected version ", Repr(expected));
}

}  // namespace cnp::worker
