// protobuf's own log lines in the service's log (service/common/protobuf_log.h): in its format,
// at most one per place in protobuf per interval with a count of those left out, and none at
// all on a thread that captures them for its answer.
#include "service/common/protobuf_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "cnp/v1/functions.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/common/log.h"
#include "tests/support/stderr_lines.h"

namespace cnp {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::StartsWith;

// Runs `log` with stderr sent to a pipe; the lines it wrote.
template <typename Fn>
std::vector<std::string> LinesOf(Fn log) {
  return cnp::testing::StderrLinesOf(log);
}

// Makes protobuf log one line (a proto3 string field that is not UTF-8, being serialized).
void MakeProtobufComplain() {
  v1::ResolveRequest request;
  request.add_functions("a.\xff");
  std::string bytes = request.SerializeAsString();
  ASSERT_FALSE(bytes.empty());
}

constexpr auto kInterval = std::chrono::seconds(10);

// The rate limit's clock, moved by the tests alone.
std::atomic<std::chrono::steady_clock::rep> fake_ticks{0};
std::chrono::steady_clock::time_point FakeNow() {
  return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(fake_ticks));
}

class ProtobufLogTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { RouteProtobufLog(kInterval, &FakeNow); }
  void TearDown() override { SetLogFormat(LogFormat::kText); }

  // Lets the interval of the lines before pass: the next line is written.
  static void LetTheIntervalPass() {
    fake_ticks += std::chrono::steady_clock::duration(kInterval).count();
  }
};

TEST_F(ProtobufLogTest, OneLinePerIntervalInTheLogsFormatWithACount) {
  LetTheIntervalPass();
  SetLogFormat(LogFormat::kJson);
  std::vector<std::string> lines = LinesOf([] {
    for (int i = 0; i < 1000; ++i) MakeProtobufComplain();
  });
  ASSERT_THAT(lines, SizeIs(1));
  EXPECT_THAT(lines[0], AllOf(StartsWith("{"), HasSubstr(R"("level":"ERROR")"),
                              HasSubstr("protobuf: String field 'cnp.v1.ResolveRequest.functions'"
                                        " contains invalid UTF-8")));

  LetTheIntervalPass();
  SetLogFormat(LogFormat::kText);
  lines = LinesOf([] { MakeProtobufComplain(); });
  ASSERT_THAT(lines, SizeIs(1));
  EXPECT_THAT(lines[0], AllOf(Not(StartsWith("{")), HasSubstr(" ERROR "),
                              HasSubstr("(and 999 more such lines left out since the last one")));

  // Within the interval nothing more is written, however long the calls take.
  fake_ticks += std::chrono::steady_clock::duration(kInterval).count() - 1;
  EXPECT_THAT(LinesOf([] { MakeProtobufComplain(); }), IsEmpty());
}

TEST_F(ProtobufLogTest, ACaptureTakesTheLinesOfItsThreadInsteadOfTheLog) {
  LetTheIntervalPass();
  std::string captured;
  std::vector<std::string> lines = LinesOf([&] {
    ProtobufLogCapture capture;
    MakeProtobufComplain();
    MakeProtobufComplain();
    captured = capture.text();
  });
  EXPECT_THAT(lines, IsEmpty());
  EXPECT_THAT(captured, AllOf(HasSubstr("invalid UTF-8"), HasSubstr("; String field")));
  // Once the capture is gone the lines go to the log again.
  lines = LinesOf([] { MakeProtobufComplain(); });
  EXPECT_THAT(lines, SizeIs(1));
}

}  // namespace
}  // namespace cnp
