#include "service/couchdb/json_text.h"

#include <string>

#include "gtest/gtest.h"

namespace cnp::couchdb {
namespace {

TEST(JsonTextTest, ControlCharactersAreEscapedNotDropped) {
  // session_listener.cc's own escaper turned them into spaces; the log's escaped DEL, which
  // this one passed raw: one escaper now, escaping all of them.
  EXPECT_EQ(ErrorLine("worker_crashed", std::string("a\nb\x01" "c\x7f" "d\"\\")),
            R"(["error","worker_crashed","a\nb\u0001c\u007fd\"\\"])");
  std::string out;
  AppendJsonString(out, "caf\xc3\xa9\t");
  EXPECT_EQ(out, "\"caf\xc3\xa9\\t\"");
}

TEST(JsonTextTest, ProtocolEndedReasonQuotesTheLastLine) {
  EXPECT_EQ(ProtocolEndedReason(R"(["fatal","query_protocol_error","uncached design doc: x"])"),
            R"(the protocol ended the session with ["fatal","query_protocol_error","uncached design doc: x"])");
}

// A probe's 50 MB unknown command was echoed whole to CouchDB and into its log; one of invalid
// UTF-8 sent those bytes back raw.
TEST(JsonTextTest, AnExcerptIsCutAtACharacterAndSaysHowLongTheTextWas) {
  EXPECT_EQ(Excerpt("short", 256), "short");
  EXPECT_EQ(Excerpt(std::string(300, 'x'), 256), std::string(256, 'x') + "... (300 bytes)");
  // Not inside the two bytes of an é.
  EXPECT_EQ(Excerpt("ab\xc3\xa9" "cd", 3), "ab... (6 bytes)");
  EXPECT_EQ(Excerpt("\xff\xfe", 256), "\\xff\\xfe");
  const std::string line = "[\"error\",\"unknown_command\",\"" + std::string(5000, 'x') + "\"]";
  EXPECT_EQ(ProtocolEndedReason(line), "the protocol ended the session with " +
                                           line.substr(0, 1024) + "... (5030 bytes)");
}

}  // namespace
}  // namespace cnp::couchdb
