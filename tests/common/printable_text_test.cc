// Outside text escaped for a terminal or a log line: nothing in it can end the line, forge
// another one or reach the terminal as a control sequence; everything else passes unchanged.
#include "common/printable_text.h"

#include <string>

#include "gtest/gtest.h"

namespace cnp {
namespace {

TEST(PrintableTextTest, ControlCharactersAreEscapedAndTheRestPasses) {
  const std::string id = std::string("a\nFAKE 2026 ERROR \x1b[31mred\r\t", 28) +
                         std::string("\0\x7f", 2) + "\xc3\xa6 \"quoted\" \\ ok";
  const std::string printed = Printable(id);
  EXPECT_EQ(printed,
            "a\\nFAKE 2026 ERROR \\x1b[31mred\\r\\t\\x00\\x7f\xc3\xa6 \"quoted\" \\ ok");
  for (unsigned char c : printed) EXPECT_TRUE(c >= 0x20 && c != 0x7f) << int{c};
}

// U+009B is CSI, ESC [ in one character, to a terminal that takes C1 controls: "\u009b2J"
// cleared it. The C1 controls are escaped as their two bytes; other characters pass.
TEST(PrintableTextTest, TheC1ControlsAreEscapedToo) {
  EXPECT_EQ(Printable("a\xc2\x9b" "2J b\xc2\x85" "c\xc2\xa0" "d\xc2"),
            "a\\xc2\\x9b2J b\\xc2\\x85" "c\xc2\xa0" "d\xc2");
}

// U+2028 and U+2029 end a line in editors, journal viewers and JavaScript (a security probe
// found U+2028 raw in the text log): escaped as their three bytes; their neighbours pass.
TEST(PrintableTextTest, TheUnicodeLineSeparatorsAreEscapedToo) {
  EXPECT_EQ(Printable("a\xe2\x80\xa8" "b\xe2\x80\xa9" "c\xe2\x80\xa7" "d\xe2\x80"),
            "a\\xe2\\x80\\xa8b\\xe2\\x80\\xa9" "c\xe2\x80\xa7" "d\xe2\x80");
}

TEST(PrintableTextTest, AppendsToWhatIsThere) {
  std::string line = "id=";
  AppendPrintable("x\ny", line);
  EXPECT_EQ(line, "id=x\\ny");
  EXPECT_EQ(Printable(""), "");
}

}  // namespace
}  // namespace cnp
