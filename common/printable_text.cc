#include "common/printable_text.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cnp {

void AppendPrintable(absl::string_view text, std::string& out) {
  for (unsigned char c : text) {
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
