#include "common/yaml_syntax_note.h"

#include "common/tab_indent.h"
#include "yaml-cpp/exceptions.h"

namespace cnp {

std::string YamlSyntaxNote(absl::string_view text, int error_line, absl::string_view message) {
  if (std::string tab = TabIndentNote(text, error_line); !tab.empty()) return tab;
  if (message == YAML::ErrorMsg::MAP_VALUE) {
    // `workers: 1` followed by `  listen: x`: a key indented under a value that is no mapping;
    // or `name: a: b`, a value holding ": ".
    return " (a `key: value` where none may start: indent this line as its siblings are, or "
           "quote a value that holds \": \")";
  }
  return "";
}

}  // namespace cnp
