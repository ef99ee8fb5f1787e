// Issue 7, item 3: `cnp map` crashed (stack overflow) on a document nested 100,000 deep; like
// cnp-server and cnp-adapter it must refuse anything deeper than 4,096 levels, with a message.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/cli/json_input.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/server_process.h"

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
  const std::string command =
      absl::StrCat(testing::Runfile("client/cli/cnp"), " map --target=unix:", dir,
                   "/nobody.sock myviews.f ", dir, "/deep.json 2>&1");
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  const int status = ::pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by a signal: " << out;
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  EXPECT_THAT(out, HasSubstr("nested deeper than 4096 levels"));
}

}  // namespace
}  // namespace cnp
