// Issue 7, item 3: a YAML alias bomb (a few hundred bytes naming billions of nodes) given to
// `cnp check` or Upload is refused after a bounded amount of work, with an error naming the
// file, the limit and the cnp-server flag that raises it.
#include <sys/resource.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/upload/uploader.h"
#include "tests/support/fake_blocking_task_runner.h"
#include "tests/upload/upload_events.h"

namespace cnp::upload::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
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
  EXPECT_THAT(error.message(), HasSubstr("expands to more than 100000 YAML nodes"));
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

// A list of `items` zeros under a design document's options, then `after` (more YAML).
std::string LongList(int items, const std::string& name, const std::string& after = "") {
  std::string yaml = absl::StrCat(name, ":\n  views:\n    v: myviews.townmap\n  options:\n    l: [");
  yaml.reserve(yaml.size() + 2 * static_cast<size_t>(items) + after.size() + 2);
  for (int i = 0; i < items; ++i) yaml.append(i ? ",0" : "0");
  absl::StrAppend(&yaml, "]\n", after);
  return yaml;
}

// The peak resident memory of this process so far, in bytes.
int64_t PeakRss() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return int64_t{usage.ru_maxrss} * 1024;
}

// Security review: 2 million list items in 4 MB (under --max-yaml-bytes) were refused by the
// node budget only after yaml-cpp had built their tree, 1 GB of memory (four at once, 2 GB).
// The nodes are counted as the file is parsed, and parsing stops at the budget.
TEST_F(YamlLimitsTest, ALongFlatListIsRefusedBeforeItsTreeIsBuilt) {
  const std::string big = LongList(2'000'000, "big");
  ASSERT_LT(big.size(), size_t{4} << 20);  // the default --max-yaml-bytes lets it through
  const int64_t before = PeakRss();
  Uploader uploader(runner_);  // the default limits, as cnp-server has them
  UploadResult result = RunUpload(uploader, Check(big, "big.yml"));
  const int64_t grown = PeakRss() - before;
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_EQ(result.errors()[0].location().file(), "big.yml");
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("expands to more than 100000 YAML nodes"));
  // The file's text and a parser's buffers, not a tree of a million nodes (about 500 bytes each).
  EXPECT_LT(grown, int64_t{100} << 20) << "peak RSS grew by " << grown / (1 << 20) << " MB";
}

// Found by a memory probe: the default let a 2 MB file of a million nodes through, and each
// node accepted is built (about 520 bytes): 542 MB for one upload, 1.05 GB for three at once,
// against a request counted as 4 MB. The largest list the default accepts now costs under
// 100 MB.
TEST_F(YamlLimitsTest, TheLargestFileTheDefaultsAcceptCostsLessThan100MB) {
  const int64_t most = YamlLimits{}.max_nodes;
  const std::string big = LongList(static_cast<int>(most) - 20, "big");
  const int64_t before = PeakRss();
  Uploader uploader(runner_);  // the default limits, as cnp-server has them
  UploadResult result = RunUpload(uploader, Check(big, "big.yml"));
  const int64_t grown = PeakRss() - before;
  EXPECT_TRUE(result.status.ok()) << result.status << result.Dump();
  EXPECT_LT(grown, int64_t{100} << 20) << "peak RSS grew by " << grown / (1 << 20) << " MB";
}

// Past the budget nothing more of the file is parsed: a syntax error after the node that spent
// it is not reached (the whole file used to be parsed first, and its error reported instead).
TEST_F(YamlLimitsTest, ParsingStopsAtTheNodeThatSpendsTheBudget) {
  Uploader::Options options;
  options.yaml_limits.max_nodes = 1000;
  Uploader uploader(runner_, options);
  UploadResult result =
      RunUpload(uploader, Check(LongList(1200, "d", "broken: [never closed\n"), "long.yml"));
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("more than 1000 YAML nodes"));
  EXPECT_EQ(result.errors()[0].location().line(), 5) << result.Dump();  // in the list
}

// Once a request's budget is spent, its further files are not parsed at all: each would be
// refused at its first node anyway (16 files of 4 MB took 8 s of CPU to be told so).
TEST_F(YamlLimitsTest, FilesAfterTheBudgetIsSpentAreNotParsed) {
  Uploader::Options options;
  options.yaml_limits.max_nodes = 1000;
  Uploader uploader(runner_, options);
  v1::UploadRequest request = Check(LongList(1200, "d"), "one.yml");
  *request.add_files() = File("two.yml", "e: [never closed\n");
  *request.add_files() = File("three.yml", LongList(10, "f"));
  UploadResult result = RunUpload(uploader, request);
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(3)) << result.Dump();
  EXPECT_EQ(result.errors()[0].location().file(), "one.yml");
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("more than 1000 YAML nodes"));
  for (int i : {1, 2}) {
    EXPECT_THAT(result.errors()[i].message(), HasSubstr("the files before it")) << result.Dump();
    EXPECT_THAT(result.errors()[i].message(), Not(HasSubstr("not valid YAML"))) << result.Dump();
  }
  EXPECT_EQ(result.errors()[1].location().file(), "two.yml");
  EXPECT_EQ(result.errors()[2].location().file(), "three.yml");
}

// The count matches the walk's: each use of an alias counts its anchor's nodes anew, so an
// alias bomb is refused by the count, before its (small) tree is walked.
TEST_F(YamlLimitsTest, AnAliasCountsTheNodesOfItsAnchorEachTimeItIsUsed) {
  Uploader::Options options;
  options.yaml_limits.max_nodes = 1000;
  Uploader uploader(runner_, options);
  // 100 nodes under the anchor (the list and 99 items), used 9 times more: over 1000.
  std::string yaml = "a:\n  views:\n    v: myviews.townmap\n  options:\n    x: &x [";
  for (int i = 0; i < 99; ++i) absl::StrAppend(&yaml, i ? ", " : "", i);
  absl::StrAppend(&yaml, "]\n    y: [*x, *x, *x, *x, *x, *x, *x, *x, *x]\n");
  UploadResult result = RunUpload(uploader, Check(yaml, "aliases.yml"));
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("more than 1000 YAML nodes"));
  // Fewer uses fit.
  std::string fits = yaml;
  fits.replace(fits.find("[*x, *x, *x,"), 12, "[");
  UploadResult fitting = RunUpload(uploader, Check(fits, "aliases.yml"));
  EXPECT_TRUE(fitting.status.ok()) << fitting.status << fitting.Dump();
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

// Every problem is an event carrying its file's name, and the events were all built before the
// first went out: 10,000 unknown keys in a file named with 300 KB made a 264 KB request hold
// about 1 GB (a security review). The name is bounded, and so are the problems reported.
TEST_F(YamlLimitsTest, ALongFileNameIsRefusedBeforeAnyParsing) {
  Uploader uploader(runner_);
  UploadResult result = RunUpload(
      uploader, Check("ok:\n  views:\n    v: myviews.townmap\n", std::string(4097, 'n')));
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1));
  EXPECT_EQ(result.errors()[0].message(), "a file name of 4097 bytes; at most 4096 (a path)");
  UploadResult at_limit = RunUpload(
      uploader, Check("ok:\n  views:\n    v: myviews.townmap\n", std::string(4096, 'n')));
  EXPECT_TRUE(at_limit.status.ok()) << at_limit.status;
}

TEST_F(YamlLimitsTest, ThousandsOfProblemsAreCountedNotAllReported) {
  std::string yaml = "many:\n  views:\n";
  // Ten names no worker resolves (their errors found last, when names are resolved), then
  // 990 errors the parse finds at once.
  for (int i = 0; i < 10; ++i) absl::StrAppend(&yaml, "    v", i, ": nowhere.f", i, "\n");
  for (int i = 10; i < 1000; ++i) absl::StrAppend(&yaml, "    v", i, ": myviews.townmap|3\n");
  for (int i = 0; i < 1000; ++i) absl::StrAppend(&yaml, "  unknown_key_", i, ": 1\n");
  Uploader uploader(runner_);
  UploadResult result = RunUpload(uploader, Check(yaml, "many.yml"));
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  // Every error counts in the status; the first 200 of each kind are reported, and one last
  // warning says how many more there are.
  EXPECT_EQ(result.status.message(), "1000 errors in the design documents");
  // The first by place, not the first found: the unresolved names' errors (lines 3 to 12) are
  // found after the 990 others (lines 13 to 1002) and every unknown key's warning (lines 1003
  // to 2002).
  const std::vector<v1::UploadProblem> errors = result.errors();
  ASSERT_THAT(errors, SizeIs(200)) << result.Dump();
  EXPECT_EQ(errors.front().location().line(), 3);
  EXPECT_EQ(errors.back().location().line(), 202);
  const std::vector<v1::UploadProblem> warnings = result.warnings();
  ASSERT_THAT(warnings, SizeIs(201));
  EXPECT_EQ(warnings.front().location().line(), 1003);
  EXPECT_EQ(warnings[199].location().line(), 1202);
  EXPECT_EQ(warnings.back().message(),
            "800 more errors and 800 more warnings not shown: only the first 200 errors and "
            "the first 200 warnings by place are; fix these and check again");
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
