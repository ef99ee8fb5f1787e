// Text from outside (a document id, a function's exception, a server's reason) made safe to
// write to a terminal or a line-oriented log: control characters are escaped (\n, \r, \t,
// \xNN; the C1 controls U+0080 to U+009F as their two bytes, \xc2\xNN; U+2028 and U+2029
// as their three), so the text can
// neither end its line, forge another one, nor send the terminal an escape sequence (ESC [31m,
// or CSI 31m). Other bytes pass through (text is UTF-8). cnp-server's log and cnp derive's
// progress lines escape the same way.
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace cnp {

// Whether text[i] starts a C1 control (U+0080 to U+009F) in UTF-8, two bytes. A terminal that
// takes them runs U+009B (CSI) as ESC [: as surely an escape sequence as with ESC itself.
bool IsC1ControlAt(absl::string_view text, size_t i);
// Whether text[i] starts U+2028 or U+2029 (LINE and PARAGRAPH SEPARATOR) in UTF-8, three
// bytes: editors, journal viewers and JavaScript end a line there.
bool IsLineSeparatorAt(absl::string_view text, size_t i);

void AppendPrintable(absl::string_view text, std::string& out);

std::string Printable(absl::string_view text);

}  // namespace cnp
