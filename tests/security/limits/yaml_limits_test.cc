// Issue 7, item 3: a YAML alias bomb (a few hundred bytes naming billions of nodes) given to
// `cnp check` or Upload is refused after a bounded amount of work, with an error naming the
// file, the limit and the cnp-server flag that raises it.
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/upload/uploader.h"
#include "tests/support/fake_blocking_task_runner.h"
#include "tests/upload/upload_events.h"

namespace cnp::upload::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

// Nine levels of nine aliases each: 9^9 = 387,420,489 strings once expanded, from 600 bytes.
std::string AliasBomb() {
  std::string yaml =
      "bomb:\n"
      "  views:\n"
      "    v: myviews.townmap\n"
      "  options:\n"
      "    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n";
  for (char level = 'b'; level <= 'i'; ++level) {
    const char below = static_cast<char>(level - 1);
    absl::StrAppend(&yaml, "    ", std::string(1, level), ": &", std::string(1, level), " [");
    for (int i = 0; i < 9; ++i) absl::StrAppend(&yaml, i ? ", " : "", "*", std::string(1, below));
    absl::StrAppend(&yaml, "]\n");
  }
  return yaml;
}

v1::UploadRequest Check(const std::string& text, const std::string& name = "bomb.yml") {
  v1::UploadRequest request;
  request.set_check_only(true);
  *request.add_files() = File(name, text);
  return request;
}

class YamlLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override { runner_.Define("myviews.townmap", 1); }
  ::cnp::testing::FakeBlockingTaskRunner runner_;
};

TEST_F(YamlLimitsTest, AnAliasBombIsRefusedByTheNodeBudget) {
  const std::string bomb = AliasBomb();
  ASSERT_LT(bomb.size(), 700u);
  Uploader uploader(runner_);  // the default limits, as cnp-server has them
  UploadResult result = RunUpload(uploader, Check(bomb));
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  const v1::UploadProblem error = result.errors()[0];
  EXPECT_EQ(error.location().file(), "bomb.yml");
  EXPECT_GT(error.location().line(), 0);
  // The walk stopped when the budget ran out: the work done is bounded by it, whatever the
  // document would have expanded to.
  EXPECT_THAT(error.message(), HasSubstr("expands to more than 1000000 YAML nodes"));
  EXPECT_THAT(error.message(), HasSubstr("--max-yaml-nodes"));
  EXPECT_THAT(result.outcomes(), SizeIs(0));
}

TEST_F(YamlLimitsTest, ALongStringUsedManyTimesIsRefusedByTheByteBudget) {
  std::string yaml = absl::StrCat("big:\n  views:\n    v: myviews.townmap\n  options:\n"
                                  "    s: &s \"", std::string(1000, 'z'), "\"\n    list: [");
  for (int i = 0; i < 2000; ++i) absl::StrAppend(&yaml, i ? ", " : "", "*s");
  absl::StrAppend(&yaml, "]\n");
  Uploader::Options options;
  options.yaml_limits.max_json_bytes = 1 << 20;  // 2,000 x 1,000 bytes do not fit
  Uploader uploader(runner_, options);
  UploadResult result = RunUpload(uploader, Check(yaml, "big.yml"));
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("more than 1048576 bytes of JSON"));
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("--max-design-bytes"));
}

TEST_F(YamlLimitsTest, TheBudgetIsSharedByTheFilesOfARequest) {
  // Each file alone fits in the budget; together they do not.
  std::string yaml = "d:\n  views:\n    v: myviews.townmap\n  options:\n    l: [";
  for (int i = 0; i < 600; ++i) absl::StrAppend(&yaml, i ? ", " : "", i);
  absl::StrAppend(&yaml, "]\n");
  Uploader::Options options;
  options.yaml_limits.max_nodes = 1000;
  Uploader uploader(runner_, options);
  ASSERT_TRUE(RunUpload(uploader, Check(yaml, "one.yml")).status.ok());
  v1::UploadRequest both = Check(yaml, "one.yml");
  *both.add_files() = File("two.yml", absl::StrCat("e", yaml.substr(1)));
  UploadResult result = RunUpload(uploader, both);
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_EQ(result.errors()[0].location().file(), "two.yml");
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("more than 1000 YAML nodes"));
}

TEST_F(YamlLimitsTest, AnAliasCycleEndsAtTheDepthLimit) {
  Uploader uploader(runner_);
  UploadResult result = RunUpload(
      uploader, Check("c:\n  views:\n    v: myviews.townmap\n  options:\n    x: &x [*x]\n",
                      "cycle.yml"));
  EXPECT_FALSE(result.status.ok());
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_EQ(result.errors()[0].location().file(), "cycle.yml");
}

TEST_F(YamlLimitsTest, AFileOverTheSizeLimitIsNotParsed) {
  Uploader::Options options;
  options.yaml_limits.max_file_bytes = 1000;
  Uploader uploader(runner_, options);
  UploadResult result = RunUpload(
      uploader, Check(absl::StrCat("# ", std::string(2000, 'x'), "\n"), "large.yml"));
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_EQ(result.errors()[0].location().file(), "large.yml");
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("more than the 1000 bytes"));
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("--max-yaml-bytes"));
}

TEST_F(YamlLimitsTest, OrdinaryDesignDocumentsStillPass) {
  Uploader uploader(runner_);
  UploadResult result = RunUpload(
      uploader, Check("ok:\n  views:\n    v: myviews.townmap\n  options: {a: &a [1, 2], b: *a}\n",
                      "ok.yml"));
  EXPECT_TRUE(result.status.ok()) << result.status << result.Dump();
  EXPECT_THAT(result.Outcome("_design/ok").document_json(),
              HasSubstr(R"("options":{"a":[1,2],"b":[1,2]})"));
}

}  // namespace
}  // namespace cnp::upload::testing
