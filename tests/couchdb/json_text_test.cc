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

}  // namespace
}  // namespace cnp::couchdb
