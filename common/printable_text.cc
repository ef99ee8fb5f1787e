#include "common/printable_text.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cnp {

void AppendPrintable(absl::string_view text, std::string& out) {
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    // The C1 controls, U+0080 to U+009F, as UTF-8: a terminal that takes them (U+009B is CSI,
    // ESC [ in one character) would run an escape sequence as surely as with ESC itself.
    if (c == 0xc2 && i + 1 < text.size()) {
      const unsigned char next = static_cast<unsigned char>(text[i + 1]);
      if (next >= 0x80 && next <= 0x9f) {
        absl::StrAppend(&out, absl::StrFormat("\\xc2\\x%02x", next));
        ++i;
        continue;
      }
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
