#include "common/printable_text.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cnp {

bool IsC1ControlAt(absl::string_view text, size_t i) {
  if (i + 1 >= text.size() || static_cast<unsigned char>(text[i]) != 0xc2) return false;
  const auto next = static_cast<unsigned char>(text[i + 1]);
  return next >= 0x80 && next <= 0x9f;
}

bool IsLineSeparatorAt(absl::string_view text, size_t i) {
  return i + 2 < text.size() && static_cast<unsigned char>(text[i]) == 0xe2 &&
         static_cast<unsigned char>(text[i + 1]) == 0x80 &&
         (static_cast<unsigned char>(text[i + 2]) == 0xa8 ||
          static_cast<unsigned char>(text[i + 2]) == 0xa9);
}

void AppendPrintable(absl::string_view text, std::string& out) {
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (IsC1ControlAt(text, i)) {
      absl::StrAppend(&out, absl::StrFormat("\\xc2\\x%02x", static_cast<unsigned char>(text[i + 1])));
      ++i;
      continue;
    }
    if (IsLineSeparatorAt(text, i)) {
      absl::StrAppend(&out, absl::StrFormat("\\xe2\\x80\\x%02x", static_cast<unsigned char>(text[i + 2])));
      i += 2;
      continue;
    }
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          absl::StrAppend(&out, absl::StrFormat("\\x%02x", c));
        } else {
          out += static_cast<char>(c);
        }
    }
  }
}

std::string Printable(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  AppendPrintable(text, out);
  return out;
}

}  // namespace cnp
