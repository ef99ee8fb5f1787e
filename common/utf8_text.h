// Whether text is UTF-8, and where it stops being: the clients check what they put in a
// protobuf string field (a YAML file, a function name) before sending it, since protobuf
// refuses the whole request with a line of its own log ("[libprotobuf ERROR ...] String field
// 'cnp.v1.UploadFile.text' contains invalid UTF-8") that names neither the file nor the line.
// Valid means what protobuf accepts: no overlong form, no surrogate, nothing past U+10FFFF.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace cnp {

struct Utf8Error {
  size_t offset;  // of the first byte of the sequence that is not UTF-8
  int line;       // from 1
  int column;     // from 1, in characters, as an editor counts them on that line
};

// Nothing when all of `text` is UTF-8.
std::optional<Utf8Error> FindInvalidUtf8(absl::string_view text);

// `text` with every byte that is not part of a UTF-8 character written as \xNN, for naming
// such text in a message without sending the terminal raw bytes.
std::string EscapeInvalidUtf8(absl::string_view text);

// At most `max_bytes` of `text`, not ending inside a UTF-8 character: a shortened quote stays
// valid UTF-8 (jiffy, a log collector, protobuf refuse the whole text for one broken character).
absl::string_view Utf8Prefix(absl::string_view text, size_t max_bytes);

}  // namespace cnp
