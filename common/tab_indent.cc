#include "common/tab_indent.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace cnp {

std::optional<int> TabIndentedLine(absl::string_view text, int through_line) {
  std::optional<int> nearest;
  int line = 1;
  for (size_t start = 0; start <= text.size() && line <= through_line; ++line) {
    size_t end = text.find('\n', start);
    if (end == absl::string_view::npos) end = text.size();
    const absl::string_view row = text.substr(start, end - start);
    const size_t content = row.find_first_not_of(" \t");
    // Blank and comment lines may hold tabs: YAML lets them.
    if (content != absl::string_view::npos && row[content] != '#' &&
        row.substr(0, content).find('\t') != absl::string_view::npos) {
      nearest = line;
    }
    start = end + 1;
  }
  return nearest;
}

std::string TabIndentNote(absl::string_view text, int error_line) {
  const std::optional<int> tab =
      TabIndentedLine(text, error_line < 0 ? std::numeric_limits<int>::max() : error_line + 1);
  if (!tab) return "";
  return absl::StrCat(" (line ", *tab, " indents with a tab: YAML indents with spaces only)");
}

}  // namespace cnp
