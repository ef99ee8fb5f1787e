// Two mistakes yaml-cpp (0.7, Debian 12's) reads without a word, where YAML 1.2 and PyYAML
// refuse them; every YAML reader of cnp runs this check first:
//   - a quoted string never closed: `language: "python` took the rest of the file as its
//     text, so the design documents after it were silently lost (a data-safety probe);
//   - the last line of a block mapping with no `:` (`  stray line`), read as a key whose
//     value is null.
// Both are found from the parser's events against the text: a quoted scalar's mark is its
// opening quote, and a plain key's is its first character.
#pragma once

#include <string>

namespace cnp {

// Throws YAML::ParserException at the place of the first such mistake in `text` (UTF-8, an
// optional byte-order mark), as yaml-cpp throws for the mistakes it sees itself; also throws
// what yaml-cpp's own parse of `text` does. Callers catch YAML::Exception as for YAML::Load.
void CheckStrictYamlSyntax(const std::string& text);

}  // namespace cnp
