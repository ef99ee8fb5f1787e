// How many JSON values a text can hold, counted as its bytes arrive. A parsed value costs
// rapidjson 16 bytes, and twice that while its array or object is being built, so text as dense
// as `[0,0,0,...]` takes about 24 times its size in memory once parsed: a bound on an answer's
// bytes alone does not bound what reading it costs. The count is an upper bound on the values
// and member names (one more than the commas, colons and opening brackets outside strings),
// and is cheap enough to run over every answer read from CouchDB.
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"

namespace cnp::couchdb {

class JsonValueCount {
 public:
  // Counts the values in `chunk`, the next bytes of the text.
  void Add(absl::string_view chunk) {
    for (const char c : chunk) {
      if (in_string_) {
        if (escaped_) {
          escaped_ = false;
        } else if (c == '\\') {
          escaped_ = true;
        } else if (c == '"') {
          in_string_ = false;
        }
      } else if (c == '"') {
        in_string_ = true;
      } else if (c == ',' || c == ':' || c == '[' || c == '{') {
        ++separators_;
      }
    }
  }

  // At least the number of values and member names in the text so far.
  int64_t values() const { return separators_ + 1; }

 private:
  int64_t separators_ = 0;
  bool in_string_ = false;
  bool escaped_ = false;
};

// The most values an answer of at most `max_bytes` may hold: one per 16 bytes, so that a parsed
// answer takes about as much memory as its text is allowed (twice that while being built), and
// never fewer than 4,096 (a small limit still reads CouchDB's small answers).
inline int64_t MaxJsonValuesFor(int64_t max_bytes) {
  constexpr int64_t kBytesPerValue = 16;
  return max_bytes / kBytesPerValue > 4096 ? max_bytes / kBytesPerValue : 4096;
}

}  // namespace cnp::couchdb
