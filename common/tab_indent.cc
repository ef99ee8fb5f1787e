#include "common/tab_indent.h"

namespace cnp {

std::optional<int> TabIndentedLine(absl::string_view text, int through_line) {
  int line = 1;
  bool indenting = true;  // only spaces and tabs so far on this line
  for (const char c : text) {
    if (line > through_line) break;
    if (c == '\n') {
      ++line;
      indenting = true;
    } else if (indenting && c == '\t') {
      return line;
    } else if (c != ' ') {
      indenting = false;
    }
  }
  return std::nullopt;
}

}  // namespace cnp
