// An UploadRequest's numbers out of their ranges are refused INVALID_ARGUMENT before anything is
// read or written (upload.proto): a negative max_conflict_retries or staged_settle_seconds used
// to be taken silently as the default.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/upload/uploader.h"
#include "tests/support/fake_blocking_task_runner.h"
#include "tests/upload/upload_events.h"

namespace cnp::upload::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

class RequestRangesTest : public ::testing::Test {
 protected:
  void SetUp() override { runner_.Define("myviews.townmap", 123); }

  v1::UploadRequest Request() {
    v1::UploadRequest request;
    request.set_check_only(true);
    *request.add_files() = File("design.yml", "location:\n    views:\n        towns:\n"
                                              "            map: myviews.townmap\n");
    return request;
  }

  void ExpectRefused(const v1::UploadRequest& request, const std::string& field) {
    UploadResult result = RunUpload(uploader_, request);
    EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
    EXPECT_THAT(result.status.message(), HasSubstr(field));
    ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
    EXPECT_THAT(result.errors()[0].message(), HasSubstr(field));
    EXPECT_THAT(result.outcomes(), IsEmpty()) << result.Dump();
  }

  ::cnp::testing::FakeBlockingTaskRunner runner_;
  Uploader uploader_{runner_};
};

TEST_F(RequestRangesTest, ANegativeMaxConflictRetriesIsRefused) {
  v1::UploadRequest request = Request();
  request.set_max_conflict_retries(-1);
  ExpectRefused(request, "max_conflict_retries is -1");
}

TEST_F(RequestRangesTest, ANegativeStagedSettleSecondsIsRefused) {
  v1::UploadRequest request = Request();
  request.set_staged_settle_seconds(-5);
  ExpectRefused(request, "staged_settle_seconds is -5");
}

TEST_F(RequestRangesTest, ZeroAndPositiveValuesAreTaken) {
  for (int value : {0, 7}) {
    v1::UploadRequest request = Request();
    request.set_max_conflict_retries(value);
    request.set_staged_settle_seconds(value);
    UploadResult result = RunUpload(uploader_, request);
    EXPECT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
    EXPECT_EQ(result.Outcome("_design/location").action(), v1::DesignDocOutcome::CHECKED);
  }
}

}  // namespace
}  // namespace cnp::upload::testing
