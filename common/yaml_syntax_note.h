// What a YAML syntax error from yaml-cpp gains in both YAML readers' messages (cnp-server's
// config file, the design documents): yaml-cpp words the two commonest mistakes, a tab in the
// indentation and a line indented under a value, as "illegal map value" or "end of map not
// found", which name neither.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace cnp {

// For yaml-cpp's error `message` at `error_line` (0-based, as its marks count; negative: no
// place) of `text`: " (line N indents with a tab: YAML indents with spaces only)" when a line
// up to there does (common/tab_indent.h); for "illegal map value", what usually causes it;
// else "".
std::string YamlSyntaxNote(absl::string_view text, int error_line, absl::string_view message);

}  // namespace cnp
