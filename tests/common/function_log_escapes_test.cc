// Functions' log() lines counted against the log's byte budget as they are written, escapes
// included. A process of its own: the budget is the process's, per second, and the other
// tests of function_log_test spend it.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "service/common/function_log.h"
#include "tests/support/stderr_lines.h"
#include "worker.pb.h"

namespace cnp {
namespace {

// Found by a review: the budget counted a message's own bytes, and a control byte is written
// escaped (\x01, four bytes): 3,000 of them a line let four times the budget through.
TEST(FunctionLogEscapesTest, BytesAreCountedAsWrittenEscapesIncluded) {
  google::protobuf::RepeatedPtrField<worker::v1::FunctionLog> lines;
  for (int i = 0; i < 100; ++i) {
    worker::v1::FunctionLog& line = *lines.Add();
    line.set_function("myviews.town");
    line.set_kind("map");
    line.set_message(std::string(3000, '\x01'));
  }
  size_t written = 0;
  const std::vector<std::string> logged =
      testing::StderrLinesOf([&lines] { LogFunctionLines(lines); });
  for (const std::string& line : logged) {
    if (absl::StrContains(line, "function=myviews.town")) written += line.size() + 1;
  }
  // At most two seconds' budget (the burst may straddle a second), however the bytes grew.
  EXPECT_GT(written, 0u);
  EXPECT_LE(written, 2 * static_cast<size_t>(kFunctionLogBytesPerSecond));
}

}  // namespace
}  // namespace cnp
