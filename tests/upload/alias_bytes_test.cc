// Security review: a 3 MB string used 20 times by alias (under a key cnp keeps as it is) made a
// 63 MB design document from a 3 MB file. The JSON bytes an alias adds are counted before the
// file's tree is built, so a document past --max-design-bytes is refused at the alias that
// passes it, before any copy is made.
#include <sys/resource.h>

#include <cstdint>
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

constexpr int64_t kMiB = int64_t{1} << 20;

// A design document whose unknown key `extra` holds a string of `bytes` bytes, used again by
// `uses` keys e0, e1, ...: the alias of use i is on line 5 + i.
std::string LongStringAliased(int64_t bytes, int uses) {
  std::string yaml = absl::StrCat("big:\n  views:\n    v: myviews.townmap\n  extra: &s \"",
                                  std::string(static_cast<size_t>(bytes), 'z'), "\"\n");
  for (int i = 0; i < uses; ++i) absl::StrAppend(&yaml, "  e", i, ": *s\n");
  return yaml;
}

v1::UploadRequest Check(const std::string& text) {
  v1::UploadRequest request;
  request.set_check_only(true);
  *request.add_files() = File("aliases.yml", text);
  return request;
}

// The peak resident memory of this process so far, in bytes.
int64_t PeakRss() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return int64_t{usage.ru_maxrss} * 1024;
}

class AliasBytesTest : public ::testing::Test {
 protected:
  void SetUp() override { runner_.Define("myviews.townmap", 1); }
  ::cnp::testing::FakeBlockingTaskRunner runner_;
};

// Refused by the count at the alias that passes the limit (the walk would have named the
// anchor's line, every use of an alias being its anchor's node), having copied nothing.
TEST_F(AliasBytesTest, AnAliasPastTheJsonBytesIsRefusedWhereItIsUsed) {
  Uploader::Options options;
  options.yaml_limits.max_json_bytes = 10'000;
  Uploader uploader(runner_, options);
  // About 1,000 bytes each use, after about 1,000 for the rest: the ninth use (e8, line 13)
  // passes 10,000 bytes.
  UploadResult result = RunUpload(uploader, Check(LongStringAliased(1000, 20)));
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  const v1::UploadProblem error = result.errors()[0];
  EXPECT_EQ(error.location().file(), "aliases.yml");
  EXPECT_EQ(error.location().line(), 13) << result.Dump();
  EXPECT_THAT(error.message(), HasSubstr("more than 10000 bytes of JSON"));
  EXPECT_THAT(error.message(), HasSubstr("--max-design-bytes"));
  // Fewer uses fit.
  UploadResult fitting = RunUpload(uploader, Check(LongStringAliased(1000, 5)));
  EXPECT_TRUE(fitting.status.ok()) << fitting.status << fitting.Dump();
}

// With the default limits (64 MiB), as cnp-server has them: 3 MiB used 30 times (90 MiB) is
// refused before the walk copies it; the copies up to the limit alone were 64 MiB.
TEST_F(AliasBytesTest, ALongStringUsedPastTheLimitIsRefusedBeforeItIsCopied) {
  const std::string yaml = LongStringAliased(3 * kMiB, 30);
  const int64_t before = PeakRss();
  Uploader uploader(runner_);
  UploadResult result = RunUpload(uploader, Check(yaml));
  const int64_t grown = PeakRss() - before;
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.status;
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("bytes of JSON"));
  // The 21st use (e20) passes 64 MiB.
  EXPECT_EQ(result.errors()[0].location().line(), 5 + 20) << result.errors()[0].message();
  // The file's text and the parser's copies of the string, not 64 MiB of copies.
  EXPECT_LT(grown, 32 * kMiB) << "peak RSS grew by " << grown / kMiB << " MiB";
}

}  // namespace
}  // namespace cnp::upload::testing
