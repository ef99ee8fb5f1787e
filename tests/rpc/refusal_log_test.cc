// The refusal log writes one line per peer and reason per interval: refusals of one kind are
// counted together, and a refusal of another kind from the same address is not hidden in them.
#include "service/rpc/refusal_log.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/rpc/access_log.h"
#include "tests/support/files.h"

namespace cnp::rpc {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::SizeIs;

class RefusalLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = cnp::testing::MakeTempDir("refusals") + "/access.log";
    auto opened = AccessLog::Open(path_);
    ASSERT_TRUE(opened.ok()) << opened.status();
    access_ = *std::move(opened);
  }
  std::vector<std::string> Lines() const {
    return absl::StrSplit(cnp::testing::ReadFile(path_), '\n', absl::SkipEmpty());
  }

  std::string path_;
  std::unique_ptr<AccessLog> access_;
};

// An hour: nothing in the test outlives an interval, so counting is all that decides.
constexpr auto kLongInterval = std::chrono::hours(1);

TEST_F(RefusalLogTest, RefusalsOfOneKindFromOnePeerAreOneLine) {
  RefusalLog log(*access_, kLongInterval);
  for (int i = 0; i < 5; ++i) log.Refused("refused", "10.0.0.7", "ipv4:10.0.0.7:4000", "cap");
  ASSERT_THAT(Lines(), SizeIs(1));
  EXPECT_THAT(Lines()[0], AllOf(HasSubstr("refused"), HasSubstr("reason=cap"),
                                HasSubstr("connections=1")));
}

TEST_F(RefusalLogTest, AnotherReasonFromTheSamePeerHasALineOfItsOwn) {
  RefusalLog log(*access_, kLongInterval);
  log.Refused("refused", "10.0.0.7", "ipv4:10.0.0.7:4000", "too many connections from this peer");
  log.Refused("refused", "10.0.0.7", "ipv4:10.0.0.7:4001", "the server's connections are full");
  log.Refused("refused", "10.0.0.7", "ipv4:10.0.0.7:4002", "too many connections from this peer");
  std::vector<std::string> lines = Lines();
  ASSERT_THAT(lines, SizeIs(2));
  EXPECT_THAT(lines[0], HasSubstr("too many connections from this peer"));
  EXPECT_THAT(lines[1], HasSubstr("the server's connections are full"));
}

}  // namespace
}  // namespace cnp::rpc
