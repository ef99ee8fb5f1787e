// The service's log lines as an operator and a log collector read them: levels, fields, and
// JSON that stays one valid line whatever the message holds.
#include "service/common/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "tests/support/stderr_lines.h"

namespace cnp {
namespace {

// Runs `log` with stderr sent to a file; the lines it wrote.
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

// A review of the logs: a function's log() text, or an exception's message, could write
// " function=... doc_id=..." ahead of the line's real fields, which a logfmt reader took.
TEST_F(LogTest, TextMessagesCannotForgeTheFieldsThatFollowThem) {
  std::vector<std::string> lines = LinesOf([] {
    LogEvent(LogLevel::kInfo, "mapped x function=forged doc_id=\"forged\"",
             {{"function", "myviews.real"}, {"doc_id", "d1"}});
    LogEvent(LogLevel::kInfo, "a=b without fields", {});
  });
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(absl::EndsWith(
      lines[0], R"( "mapped x function=forged doc_id=\"forged\"" function=myviews.real doc_id=d1)"))
      << lines[0];
  // With no fields after it, nothing is forged: the message stays as written.
  EXPECT_TRUE(absl::EndsWith(lines[1], "] a=b without fields")) << lines[1];
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

// A JSON line that is one valid UTF-8 JSON object, or why not.
::testing::AssertionResult IsJsonObject(const std::string& line, rapidjson::Document& json) {
  json.Parse<rapidjson::kParseValidateEncodingFlag>(line.c_str(), line.size());
  if (json.HasParseError()) {
    return ::testing::AssertionFailure()
           << rapidjson::GetParseError_En(json.GetParseError()) << " at "
           << json.GetErrorOffset() << " of a line of " << line.size() << " bytes";
  }
  if (!json.IsObject()) return ::testing::AssertionFailure() << "not an object";
  return ::testing::AssertionSuccess();
}

// The keys of a JSON line's object, in order, duplicates kept (rapidjson keeps them).
std::vector<std::string> KeysOf(const rapidjson::Document& json) {
  std::vector<std::string> keys;
  for (auto m = json.MemberBegin(); m != json.MemberEnd(); ++m) keys.push_back(m->name.GetString());
  return keys;
}

bool HasDuplicates(std::vector<std::string> keys) {
  std::sort(keys.begin(), keys.end());
  return std::adjacent_find(keys.begin(), keys.end()) != keys.end();
}

// Bytes that are not UTF-8 (a document id a Validate call sent, which no one checks) made the
// line invalid JSON for a collector; they are written \xNN, and the rest of the text as it is.
TEST_F(LogTest, JsonLinesStayUtf8WhateverTheTextHolds) {
  SetLogFormat(LogFormat::kJson);
  std::vector<std::string> lines = LinesOf([] {
    LogEvent(LogLevel::kWarning, "cut \xe2\x82 short", {{"doc_id", "\xff\xfe caf\xc3\xa9"}});
  });
  ASSERT_EQ(lines.size(), 1u);
  rapidjson::Document json;
  ASSERT_TRUE(IsJsonObject(lines[0], json)) << lines[0];
  EXPECT_EQ(std::string(json["msg"].GetString()), "cut \\xe2\\x82 short");
  EXPECT_EQ(std::string(json["doc_id"].GetString()), "\\xff\\xfe caf\xc3\xa9");
}

// U+009B is CSI (ESC [ in one character) to a terminal that takes C1 controls, and JSON lets it
// through raw: a log shown with tail or journalctl could clear the screen or recolour it. U+2028
// and U+2029 end a line in editors, journal viewers and JavaScript (a security probe found U+2028
// raw in the text log). In both formats none of them reaches the line raw; JSON still reads back
// the same text.
TEST_F(LogTest, NoLineCarriesARawC1ControlOrLineSeparator) {
  const std::string csi = "\xc2\x9b" "2J";
  const std::string separators = "a\xe2\x80\xa8" "b\xe2\x80\xa9" "c";
  for (const std::string& text : {csi, separators}) {
    for (LogFormat format : {LogFormat::kText, LogFormat::kJson}) {
      SetLogFormat(format);
      std::vector<std::string> lines = LinesOf([&text] {
        LogEvent(LogLevel::kWarning, "raised " + text, {{"doc_id", text}});
        LogEvent(LogLevel::kWarning, "quoted=" + text, {{"doc_id", "spaced " + text}});
      });
      ASSERT_EQ(lines.size(), 2u);
      for (const std::string& line : lines) {
        for (const char* raw : {"\xc2\x9b", "\xe2\x80\xa8", "\xe2\x80\xa9"}) {
          EXPECT_FALSE(absl::StrContains(line, raw)) << line;
        }
        if (format == LogFormat::kJson) {
          rapidjson::Document json;
          ASSERT_TRUE(IsJsonObject(line, json)) << line;
          EXPECT_TRUE(absl::EndsWith(json["doc_id"].GetString(), text)) << line;
          EXPECT_TRUE(absl::EndsWith(json["msg"].GetString(), text)) << line;
        }
      }
    }
  }
}

// Integers a collector sums or compares (uids, pids, counts) are JSON numbers; a value marked
// a number that is not a JSON integer stays a string, so the line stays valid (before: every
// value was a string, "worker_pid":"17560").
TEST_F(LogTest, JsonWritesIntegerFieldsAsNumbers) {
  SetLogFormat(LogFormat::kJson);
  std::vector<std::string> lines = LinesOf([] {
    LogEvent(LogLevel::kWarning, "refused",
             {{"peer_uid", "1000", true},
              {"peer_pid", "17560", true},
              {"delta", "-3", true},
              {"zero", "0", true},
              {"padded", "007", true},
              {"not_a_number", "12ab", true},
              {"minus", "-", true},
              {"id", "42"}});
  });
  ASSERT_EQ(lines.size(), 1u);
  rapidjson::Document json;
  ASSERT_TRUE(IsJsonObject(lines[0], json)) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], R"("peer_uid":1000,"peer_pid":17560,)")) << lines[0];
  ASSERT_TRUE(json["peer_uid"].IsInt64());
  EXPECT_EQ(json["peer_uid"].GetInt64(), 1000);
  EXPECT_EQ(json["peer_pid"].GetInt64(), 17560);
  EXPECT_EQ(json["delta"].GetInt64(), -3);
  EXPECT_EQ(json["zero"].GetInt64(), 0);
  EXPECT_STREQ(json["padded"].GetString(), "007");
  EXPECT_STREQ(json["not_a_number"].GetString(), "12ab");
  EXPECT_STREQ(json["minus"].GetString(), "-");
  EXPECT_STREQ(json["id"].GetString(), "42");  // not marked: a string, as before
  EXPECT_TRUE(json["pid"].IsInt64());          // the line's own pid
}

std::string TestPeer(const void*) { return "ipv4:10.0.0.9:5000"; }

// A call's scope adds rpc and peer, but not over a field the event names itself: a JSON line
// never carries a key twice (before: a session's log line inside a call had "peer" twice).
TEST_F(LogTest, ACallScopeAddsNoKeyTheEventAlreadyHas) {
  SetLogFormat(LogFormat::kJson);
  int call = 0;
  std::vector<std::string> lines = LinesOf([&] {
    CallLogScope scope("Session", &call, TestPeer);
    LogEvent(LogLevel::kInfo, "own peer", {{"function", "f"}, {"peer", "unix uid=1 pid=2"}});
    LogEvent(LogLevel::kInfo, "scope's peer", {{"function", "f"}});
    // An empty field is left out: the scope's peer is written (a gRPC call's function lines).
    LogEvent(LogLevel::kInfo, "empty peer", {{"function", "f"}, {"peer", ""}});
  });
  ASSERT_EQ(lines.size(), 3u);
  for (const std::string& line : lines) {
    rapidjson::Document json;
    ASSERT_TRUE(IsJsonObject(line, json)) << line;
    EXPECT_FALSE(HasDuplicates(KeysOf(json))) << line;
    EXPECT_STREQ(json["rpc"].GetString(), "Session") << line;
  }
  rapidjson::Document first, second;
  ASSERT_TRUE(IsJsonObject(lines[0], first));
  ASSERT_TRUE(IsJsonObject(lines[1], second));
  EXPECT_STREQ(first["peer"].GetString(), "unix uid=1 pid=2");
  EXPECT_STREQ(second["peer"].GetString(), "ipv4:10.0.0.9:5000");
  rapidjson::Document third;
  ASSERT_TRUE(IsJsonObject(lines[2], third));
  ASSERT_TRUE(third.HasMember("peer")) << lines[2];
  EXPECT_STREQ(third["peer"].GetString(), "ipv4:10.0.0.9:5000");
}

// A function's log() message or traceback may be as large as --max-call-bytes; journald cuts
// lines at LineMax (48K) into pieces no collector reads as JSON. Long values are cut, at a
// character's boundary, and the line says so.
TEST_F(LogTest, ALongLineIsCutToTheCapAndSaysSo) {
  std::string message;
  while (message.size() < 150'000) message += "caf\xc3\xa9 \"quoted\"\n";  // é is two bytes
  const std::string traceback(100'000, 't');
  SetLogFormat(LogFormat::kJson);
  const std::string line = FormatLogLine(
      "WARN", message, {{"function", "myviews.by_town"}, {"traceback", traceback}});
  ASSERT_TRUE(absl::EndsWith(line, "\n"));
  EXPECT_LE(line.size(), kMaxLogLineBytes);
  rapidjson::Document json;
  ASSERT_TRUE(IsJsonObject(line.substr(0, line.size() - 1), json)) << line.substr(0, 200);
  ASSERT_TRUE(json.HasMember("truncated") && json["truncated"].IsBool());
  EXPECT_TRUE(json["truncated"].GetBool());
  EXPECT_STREQ(json["function"].GetString(), "myviews.by_town");  // short fields stay whole
  const std::string msg = json["msg"].GetString();
  EXPECT_GT(msg.size(), 1000u);
  EXPECT_TRUE(absl::StartsWith(message, msg));
  const std::string tb = json["traceback"].GetString();
  EXPECT_GT(tb.size(), 1000u);
  EXPECT_TRUE(absl::StartsWith(traceback, tb));

  // A line under the cap is not marked.
  const std::string short_line = FormatLogLine("WARN", "short", {{"traceback", "tb"}});
  EXPECT_FALSE(absl::StrContains(short_line, "truncated")) << short_line;

  SetLogFormat(LogFormat::kText);
  const std::string text = FormatLogLine("WARN", message, {{"traceback", traceback}});
  EXPECT_LE(text.size(), kMaxLogLineBytes);
  EXPECT_TRUE(absl::EndsWith(text, " truncated=true\n")) << text.substr(text.size() - 100);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);
}

// Threads logging long lines at once into a pipe its reader drains slowly, as journald or a
// container runtime may: a write that the full pipe cut short let another thread's line in
// mid-line (12 of 19 lines were not JSON), and the rest of a short write was lost.
TEST_F(LogTest, ThreadsLoggingLongLinesIntoASlowPipeWriteWholeLines) {
  SetLogFormat(LogFormat::kJson);
  int pipe[2];
  ASSERT_EQ(::pipe2(pipe, O_CLOEXEC), 0);
  ::fcntl(pipe[1], F_SETPIPE_SZ, 4096);  // the smallest: writes are cut short the most
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(pipe[1], STDERR_FILENO);
  ::close(pipe[1]);
  std::string text;
  std::thread reader([&text, fd = pipe[0]] {
    char buffer[512];
    ssize_t n;
    while ((n = ::read(fd, buffer, sizeof buffer)) > 0) text.append(buffer, n);
  });
  constexpr int kThreads = 4;
  constexpr int kLinesEach = 20;
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([t] {
      const std::string message(12'000, static_cast<char>('a' + t));
      for (int i = 0; i < kLinesEach; ++i) {
        LogEvent(LogLevel::kInfo, message, {{"thread", absl::StrCat(t)}});
      }
    });
  }
  for (std::thread& writer : writers) writer.join();
  ::dup2(saved, STDERR_FILENO);  // the pipe's last writer: the reader sees its end
  ::close(saved);
  reader.join();
  ::close(pipe[0]);
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), static_cast<size_t>(kThreads * kLinesEach));
  int invalid = 0;
  for (const std::string& line : lines) {
    rapidjson::Document json;
    if (!IsJsonObject(line, json)) {
      ++invalid;
      continue;
    }
    const std::string msg = json["msg"].GetString();
    const char own = static_cast<char>('a' + json["thread"].GetString()[0] - '0');
    EXPECT_TRUE(msg == std::string(12'000, own))
        << "thread " << own << "'s line holds another's text: " << msg.substr(0, 100) << "...";
  }
  EXPECT_EQ(invalid, 0) << "of " << lines.size() << " lines";
}

}  // namespace
}  // namespace cnp
