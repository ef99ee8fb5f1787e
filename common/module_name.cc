#include "common/module_name.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace cnp {

bool LooksLikeModuleName(absl::string_view text) {
  for (absl::string_view part : absl::StrSplit(text, '.')) {
    if (part.empty() || absl::ascii_isdigit(part[0])) return false;
    for (char c : part) {
      if (!absl::ascii_isalnum(c) && c != '_' && static_cast<unsigned char>(c) < 0x80) {
        return false;
      }
    }
  }
  return true;
}

std::string WhyNotAModuleName(absl::string_view text) {
  if (LooksLikeModuleName(text)) return "";
  return absl::StrCat(
      "not a module name; write the module's dotted name, as `import` takes it (e.g. "
      "myviews.towns)",
      absl::StrContains(text, '*')
          ? "; there are no wildcards: a module allowed covers the modules below it"
          : "");
}

}  // namespace cnp
