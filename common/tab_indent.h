// A tab in a YAML file's indentation, the format's most common mistake: yaml-cpp reports it
// in words that never name the tab ("illegal map value", "end of map not found"), at the line
// it gave up on. Both YAML readers (cnp-server's config file, the design documents) add which
// line indents with one.
#pragma once

#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace cnp {

// The last line (1-based) among the first `through_line` (1-based; past the end: all) of `text`
// whose indentation holds a tab, if any: the nearest to where the reader gave up. Blank and
// comment-only lines, which YAML lets hold tabs, do not count.
std::optional<int> TabIndentedLine(absl::string_view text, int through_line);

// What a YAML syntax error at `error_line` (0-based, as yaml-cpp's marks count; negative when
// the mark has no place: the whole text) says of such a line: " (line N indents with a tab:
// YAML indents with spaces only)", or "".
std::string TabIndentNote(absl::string_view text, int error_line);

}  // namespace cnp
