// Functions' log() lines and exceptions in the service's log: attributed, and bounded in lines
// and in bytes a second, whatever a caller makes a function log.
#include "service/common/function_log.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "service/common/log.h"
#include "tests/support/stderr_lines.h"
#include "worker.pb.h"

namespace cnp {
namespace {

using Lines = google::protobuf::RepeatedPtrField<worker::v1::FunctionLog>;

Lines LogLinesOf(int count, size_t bytes, bool raised) {
  Lines lines;
  for (int i = 0; i < count; ++i) {
    worker::v1::FunctionLog& line = *lines.Add();
    line.set_function("myviews.town");
    line.set_kind("map");
    line.set_doc_id("d" + std::to_string(i));
    line.set_message(std::string(bytes, 'x'));
    if (raised) line.set_error("KeyError");
  }
  return lines;
}

int CountWith(const std::vector<std::string>& lines, absl::string_view text) {
  int count = 0;
  for (const std::string& line : lines) count += absl::StrContains(line, text) ? 1 : 0;
  return count;
}

TEST(FunctionLogTest, ShortLinesAreEachLoggedAttributedToTheirFunction) {
  const std::vector<std::string> lines = testing::StderrLinesOf(
      [] { LogFunctionLines(LogLinesOf(20, 100, false), "7/1", "unix:"); });
  EXPECT_EQ(CountWith(lines, "function=myviews.town kind=map doc_id=d"), 20);
  EXPECT_EQ(CountWith(lines, "session=7/1"), 20);
}

// A probe: a function that logs what its document holds let one caller write 200 lines of
// 16 KiB a second into the log (3 MB/s), which rotates only when it is a file of its own.
TEST(FunctionLogTest, LongLinesAreBoundedInBytesASecondAndTheRestCounted) {
  // 100 lines of 16 KiB, at most two seconds' budget (the burst may straddle a second).
  const std::vector<std::string> lines = testing::StderrLinesOf(
      [] { LogFunctionLines(LogLinesOf(100, kMaxLogLineBytes, false)); });
  const int logged = CountWith(lines, "function=myviews.town");
  const int per_second = static_cast<int>(kFunctionLogBytesPerSecond / kMaxLogLineBytes);
  EXPECT_GE(logged, per_second / 2);  // an earlier test may have used some of this second's
  EXPECT_LE(logged, 2 * per_second);
}

TEST(FunctionLogTest, ExceptionsWithLongTracebacksAreBoundedInBytesToo) {
  Lines raised = LogLinesOf(20, 10, true);
  for (worker::v1::FunctionLog& line : raised) {
    line.set_traceback(std::string(kMaxLogLineBytes, 't'));
  }
  const std::vector<std::string> lines =
      testing::StderrLinesOf([&raised] { LogFunctionLines(raised); });
  const int per_second = static_cast<int>(kFunctionExceptionBytesPerSecond / kMaxLogLineBytes);
  EXPECT_GE(CountWith(lines, "function=myviews.town"), 1);
  EXPECT_LE(CountWith(lines, "function=myviews.town"), 2 * per_second);
}

}  // namespace
}  // namespace cnp
