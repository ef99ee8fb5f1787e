// The refusal log writes one line per peer and reason per interval: refusals of one kind are
// counted together, and a refusal of another kind from the same address is not hidden in them.
#include "service/rpc/refusal_log.h"

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "rapidjson/document.h"
#include "service/common/log.h"
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

// A refused unix peer's uid and pid are peer_uid and peer_pid: the line's own "pid" (the
// server's) is not repeated with another meaning, and the numbers, the count included, are
// JSON numbers (before: "pid" twice, "uid":"1000", "connections":"1").
TEST_F(RefusalLogTest, JsonLinesHaveEachKeyOnceAndNumbersAsNumbers) {
  SetLogFormat(LogFormat::kJson);
  RefusalLog log(*access_, kLongInterval);
  log.Refused("refused", "unix:/run/cnp.sock uid 1000", "unix:/run/cnp.sock",
              "uid not allowed (see --allow-uid)",
              {{"peer_uid", "1000", true}, {"peer_pid", "4242", true}});
  SetLogFormat(LogFormat::kText);
  ASSERT_THAT(Lines(), SizeIs(1));
  const std::string line = Lines()[0];
  rapidjson::Document json;
  json.Parse(line.c_str(), line.size());
  ASSERT_FALSE(json.HasParseError()) << line;
  ASSERT_TRUE(json.IsObject()) << line;
  std::set<std::string> keys;
  for (auto m = json.MemberBegin(); m != json.MemberEnd(); ++m) {
    EXPECT_TRUE(keys.insert(m->name.GetString()).second) << "twice: " << m->name.GetString()
                                                         << " in " << line;
  }
  ASSERT_TRUE(json.HasMember("peer_uid") && json.HasMember("peer_pid")) << line;
  EXPECT_TRUE(json["peer_uid"].IsInt64()) << line;
  EXPECT_EQ(json["peer_pid"].GetInt64(), 4242) << line;
  EXPECT_TRUE(json["connections"].IsInt64()) << line;
  EXPECT_EQ(json["connections"].GetInt64(), 1) << line;
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
