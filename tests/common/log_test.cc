// The service's log lines as an operator and a log collector read them: levels, fields, and
// JSON that stays one valid line whatever the message holds.
#include "service/common/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/support/stderr_lines.h"

namespace cnp {
namespace {

// Runs `log` with stderr sent to a pipe; the lines it wrote.
template <typename Fn>
std::vector<std::string> LinesOf(Fn log) {
  return cnp::testing::StderrLinesOf(log);
}

class LogTest : public ::testing::Test {
 protected:
  void TearDown() override {
    SetLogLevel(LogLevel::kInfo);
    SetLogFormat(LogFormat::kText);
  }
};

TEST_F(LogTest, LinesBelowTheLevelAreDropped) {
  SetLogLevel(LogLevel::kWarning);
  std::vector<std::string> lines = LinesOf([] {
    LogInfo("an info line");
    LogWarning("a warning line");
    LogError("an error line");
  });
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(absl::StrContains(lines[0], " WARN ")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], "a warning line"));
  EXPECT_TRUE(absl::StrContains(lines[1], " ERROR ")) << lines[1];
}

TEST_F(LogTest, LevelAndFormatNamesParse) {
  LogLevel level = LogLevel::kInfo;
  EXPECT_TRUE(ParseLogLevel("warn", level));
  EXPECT_EQ(level, LogLevel::kWarning);
  EXPECT_TRUE(ParseLogLevel("debug", level));
  EXPECT_EQ(level, LogLevel::kDebug);
  EXPECT_FALSE(ParseLogLevel("loud", level));
  LogFormat format = LogFormat::kText;
  EXPECT_TRUE(ParseLogFormat("json", format));
  EXPECT_EQ(format, LogFormat::kJson);
  EXPECT_FALSE(ParseLogFormat("xml", format));
}

TEST_F(LogTest, TextFieldsFollowTheMessageQuotedWhenTheyHoldSpaces) {
  std::vector<std::string> lines = LinesOf([] {
    LogEvent(LogLevel::kInfo, "call failed",
             {{"function", "myviews.by_town"}, {"reason", "a long reason"}, {"empty", ""}});
  });
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::EndsWith(lines[0],
                             "call failed function=myviews.by_town reason=\"a long reason\""))
      << lines[0];
}

TEST_F(LogTest, TextLinesCannotBeEndedOrForgedByWhatTheyQuote) {
  // A document id from a request, as a function error's line would carry it.
  std::vector<std::string> lines = LinesOf([] {
    LogEvent(LogLevel::kWarning, "function raised on y\n2026-11-30T00:00:00Z ERROR forged\x1b[2J",
             {{"doc_id", "a\tb\nFORGED"}});
  });
  ASSERT_EQ(lines.size(), 1u) << lines.back();
  EXPECT_TRUE(absl::StrContains(
      lines[0], "function raised on y\\n2026-11-30T00:00:00Z ERROR forged\\x1b[2J"))
      << lines[0];
  EXPECT_TRUE(absl::EndsWith(lines[0], R"(doc_id="a\tb\nFORGED")")) << lines[0];
}

TEST_F(LogTest, JsonLinesEscapeWhatWouldBreakTheLine) {
  SetLogFormat(LogFormat::kJson);
  std::vector<std::string> lines = LinesOf([] {
    LogEvent(LogLevel::kError, "two\nlines \"quoted\" \\ and \x01",
             {{"doc_id", "a\tb"}});
  });
  ASSERT_EQ(lines.size(), 1u);  // the newline in the message did not end the line
  const std::string& line = lines[0];
  EXPECT_TRUE(absl::StartsWith(line, "{\"ts\":\"")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"level\":\"ERROR\"")) << line;
  EXPECT_TRUE(absl::StrContains(line, R"("msg":"two\nlines \"quoted\" \\ and \u0001")")) << line;
  EXPECT_TRUE(absl::StrContains(line, R"("doc_id":"a\tb")")) << line;
  EXPECT_TRUE(absl::EndsWith(line, "}")) << line;
}

}  // namespace
}  // namespace cnp
