#include "client/derive/error_log_limit.h"

#include "gtest/gtest.h"

namespace cnp::derive {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1000);

TEST(ErrorLogLimitTest, LogsABurstPerWindowAndCountsTheRest) {
  ErrorLogLimit limit(/*burst=*/3, absl::Minutes(1));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limit.Allow(kStart + absl::Seconds(i)));
  EXPECT_FALSE(limit.Allow(kStart + absl::Seconds(10)));
  EXPECT_FALSE(limit.Allow(kStart + absl::Seconds(20)));
  // Not said before the window is over: the line would come again for every few more.
  EXPECT_EQ(limit.TakeLeftOut(kStart + absl::Seconds(30)), 0);
  EXPECT_EQ(limit.TakeLeftOut(kStart + absl::Seconds(61)), 2);
  EXPECT_EQ(limit.TakeLeftOut(kStart + absl::Seconds(62)), 0);  // said once
  // A new window logs a new burst.
  EXPECT_TRUE(limit.Allow(kStart + absl::Seconds(62)));
}

TEST(ErrorLogLimitTest, TheEndSaysWhatWasLeftOutAtOnce) {
  ErrorLogLimit limit(/*burst=*/1, absl::Minutes(1));
  EXPECT_TRUE(limit.Allow(kStart));
  EXPECT_FALSE(limit.Allow(kStart));
  EXPECT_EQ(limit.TakeLeftOut(kStart, /*final=*/true), 1);
  EXPECT_EQ(limit.TakeLeftOut(kStart, /*final=*/true), 0);
}

TEST(ErrorLogLimitTest, NothingLeftOutSaysNothing) {
  ErrorLogLimit limit;
  EXPECT_TRUE(limit.Allow(kStart));
  EXPECT_EQ(limit.TakeLeftOut(kStart + absl::Hours(1), /*final=*/true), 0);
}

}  // namespace
}  // namespace cnp::derive
