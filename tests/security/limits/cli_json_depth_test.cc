// Issue 7, item 3: `cnp map` crashed (stack overflow) on a document nested 100,000 deep; like
// cnp-server and cnp-adapter it must refuse anything deeper than 4,096 levels, with a message.
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/cli/json_input.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/server_process.h"
#include "tests/support/spawn.h"

namespace cnp {
namespace {

using ::testing::HasSubstr;

std::string Nested(int depth) {
  return absl::StrCat("{\"_id\":\"deep\",\"x\":", std::string(depth, '['), std::string(depth, ']'),
                      "}");
}

TEST(JsonInputDepthTest, DeeperThanTheLimitIsAnError) {
  absl::StatusOr<std::vector<std::string>> values = cli::SplitJsonValues(Nested(100000), true);
  ASSERT_FALSE(values.ok());
  EXPECT_THAT(values.status().message(), HasSubstr("nested deeper than 4096 levels"));
  EXPECT_THAT(values.status().message(), HasSubstr("line 1, column "));
}

TEST(JsonInputDepthTest, UpToTheLimitIsAccepted) {
  // The document object itself is one level.
  absl::StatusOr<std::vector<std::string>> values =
      cli::SplitJsonValues(Nested(cli::kMaxJsonDepth - 1), true);
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(values->size(), 1u);
  EXPECT_FALSE(cli::SplitJsonValues(Nested(cli::kMaxJsonDepth), true).ok());
}

TEST(CnpMapDepthTest, TheCommandRefusesADeepDocumentAndExits) {
  const std::string dir = testing::MakeTempDir("cli-depth");
  std::ofstream(dir + "/deep.json") << Nested(100000);
  const testing::ProcessResult run = testing::RunWithInput(
      {testing::Runfile("client/cli/cnp"), "map",
       absl::StrCat("--target=unix:", dir, "/nobody.sock"), "myviews.f", dir + "/deep.json"},
      "", testing::Output::kTogether);
  EXPECT_EQ(run.exit_code, 2) << "(-1: killed by a signal) " << run.out;
  EXPECT_THAT(run.out, HasSubstr("nested deeper than 4096 levels"));
}

}  // namespace
}  // namespace cnp
