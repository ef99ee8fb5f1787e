// How both worker pools merge reload requests (service/pool/reload_requests.h): the first
// reloads at once, those that come while a reload runs or within the quiet period of the last
// request become one more, started once no reload runs and the requests have stopped for it.
#include "service/pool/reload_requests.h"

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace cnp::pool {
namespace {

using Answer = ReloadRequests::Answer;

TEST(ReloadRequestsTest, TheFirstRequestReloadsAtOnceAndNothingFollowsIt) {
  ReloadRequests reloads(absl::Milliseconds(500));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_EQ(reloads.Ask(t0, /*running=*/false), Answer::kStartNow);
  EXPECT_FALSE(reloads.pending());
  absl::Time next_check = absl::InfiniteFuture();
  EXPECT_FALSE(reloads.FollowUpDue(t0 + absl::Hours(1), next_check));
  EXPECT_EQ(next_check, absl::InfiniteFuture());
  // A request once that reload has ended, with none merged, reloads at once again.
  EXPECT_EQ(reloads.Ask(t0 + absl::Seconds(2), /*running=*/false), Answer::kStartNow);
}

TEST(ReloadRequestsTest, AStormWhileOneRunsBecomesOneMoreAfterTheQuietPeriod) {
  ReloadRequests reloads(absl::Milliseconds(500));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  ASSERT_EQ(reloads.Ask(t0, /*running=*/false), Answer::kStartNow);
  EXPECT_EQ(reloads.Ask(t0 + absl::Milliseconds(1), /*running=*/true), Answer::kMerged);
  for (int i = 2; i < 200; ++i) {
    EXPECT_EQ(reloads.Ask(t0 + absl::Milliseconds(i), /*running=*/true), Answer::kAlreadyMerged);
  }
  const absl::Time last = t0 + absl::Milliseconds(199);
  // The running reload has ended; requests that come after it, while one is pending, merge too.
  EXPECT_EQ(reloads.Ask(last + absl::Milliseconds(100), /*running=*/false),
            Answer::kAlreadyMerged);
  const absl::Time quiet_from = last + absl::Milliseconds(100);

  absl::Time next_check = absl::InfiniteFuture();
  EXPECT_FALSE(reloads.FollowUpDue(quiet_from + absl::Milliseconds(499), next_check));
  EXPECT_EQ(next_check, quiet_from + absl::Milliseconds(500));
  EXPECT_TRUE(reloads.pending());
  next_check = absl::InfiniteFuture();
  EXPECT_TRUE(reloads.FollowUpDue(quiet_from + absl::Milliseconds(500), next_check));
  EXPECT_FALSE(reloads.pending());
  // Due once: the follow-up is not started twice.
  EXPECT_FALSE(reloads.FollowUpDue(quiet_from + absl::Seconds(5), next_check));
}

// The storm of lifecycle_test: each SIGHUP is followed by a call that waits for the workers,
// so every reload has ended before the next signal comes. Those signals still merge.
TEST(ReloadRequestsTest, RequestsRightAfterAnEndedReloadMergeIntoOneMore) {
  ReloadRequests reloads(absl::Milliseconds(500));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  ASSERT_EQ(reloads.Ask(t0, /*running=*/false), Answer::kStartNow);
  EXPECT_EQ(reloads.Ask(t0 + absl::Milliseconds(200), /*running=*/false), Answer::kMerged);
  EXPECT_EQ(reloads.Ask(t0 + absl::Milliseconds(400), /*running=*/false),
            Answer::kAlreadyMerged);
  absl::Time next_check = absl::InfiniteFuture();
  EXPECT_FALSE(reloads.FollowUpDue(t0 + absl::Milliseconds(899), next_check));
  EXPECT_EQ(next_check, t0 + absl::Milliseconds(900));
  EXPECT_TRUE(reloads.FollowUpDue(t0 + absl::Milliseconds(900), next_check));
  // Once the requests have stopped for the quiet period, the next one reloads at once.
  EXPECT_EQ(reloads.Ask(t0 + absl::Milliseconds(1400), /*running=*/false), Answer::kStartNow);
}

}  // namespace
}  // namespace cnp::pool
