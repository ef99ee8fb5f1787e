// When a slot of the pool starts its next worker (service/pool/restart_policy.h): failed starts
// and deaths with no task back off together, doubling; a task that crashed its worker is
// followed at once, but no sooner than the crash restart interval after the last start; only
// failed starts make callers give up waiting.
#include "service/pool/restart_policy.h"

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "service/pool/pool_options.h"

namespace cnp::pool {
namespace {

PoolOptions Options() {
  PoolOptions options;
  options.min_backoff = absl::Milliseconds(100);
  options.max_backoff = absl::Milliseconds(500);
  options.min_crash_restart_interval = absl::Milliseconds(100);
  options.failures_before_fail_fast = 3;
  return options;
}

TEST(RestartBackoffTest, DoublesFromTheMinimumAndStopsAtTheMaximum) {
  const absl::Duration min = absl::Milliseconds(100), max = absl::Milliseconds(500);
  EXPECT_EQ(RestartBackoff(min, max, 0), absl::ZeroDuration());
  EXPECT_EQ(RestartBackoff(min, max, 1), absl::Milliseconds(100));
  EXPECT_EQ(RestartBackoff(min, max, 2), absl::Milliseconds(200));
  EXPECT_EQ(RestartBackoff(min, max, 3), absl::Milliseconds(400));
  EXPECT_EQ(RestartBackoff(min, max, 4), absl::Milliseconds(500));
  EXPECT_EQ(RestartBackoff(min, max, 60), absl::Milliseconds(500));
}

TEST(RestartPolicyTest, FailedStartsBackOffAndAStartThatWorksEndsThem) {
  RestartPolicy policy(Options());
  EXPECT_FALSE(policy.LastStartFailed());
  EXPECT_EQ(policy.StartFailed(), absl::Milliseconds(100));
  EXPECT_TRUE(policy.LastStartFailed());
  EXPECT_EQ(policy.StartFailed(), absl::Milliseconds(200));
  EXPECT_EQ(policy.StartFailed(), absl::Milliseconds(400));
  EXPECT_EQ(policy.StartFailed(), absl::Milliseconds(500));
  policy.Started();
  EXPECT_FALSE(policy.LastStartFailed());
  EXPECT_EQ(policy.StartFailed(), absl::Milliseconds(100));
}

TEST(RestartPolicyTest, OnlyFailedStartsMakeCallersStopWaiting) {
  RestartPolicy policy(Options());
  for (int i = 0; i < 10; ++i) policy.DiedWithoutTask();
  EXPECT_FALSE(policy.GivenUp());  // it started every time: callers wait for the next one
  policy.StartFailed();
  policy.StartFailed();
  EXPECT_FALSE(policy.GivenUp());
  policy.StartFailed();
  EXPECT_TRUE(policy.GivenUp());
  policy.Started();
  EXPECT_FALSE(policy.GivenUp());
}

TEST(RestartPolicyTest, DeathsWithNoTaskBackOffWithTheFailedStartsAndAGoodCallEndsThem) {
  RestartPolicy policy(Options());
  EXPECT_EQ(policy.DiedWithoutTask(), absl::Milliseconds(100));
  EXPECT_EQ(policy.DiedWithoutTask(), absl::Milliseconds(200));
  // A failed start after two deaths is the third failure in a row.
  EXPECT_EQ(policy.StartFailed(), absl::Milliseconds(400));
  policy.Started();  // the failed start is forgiven, the deaths are not...
  EXPECT_EQ(policy.DiedWithoutTask(), absl::Milliseconds(400));
  policy.CallEnded();  // ...until a call ends well
  EXPECT_EQ(policy.DiedWithoutTask(), absl::Milliseconds(100));
}

TEST(RestartPolicyTest, ATaskThatCrashedItsWorkerIsFollowedAtOnceButNotSoonerThanTheInterval) {
  RestartPolicy policy(Options());
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  // Backoff run up by other failures does not delay it.
  policy.DiedWithoutTask();
  policy.DiedWithoutTask();
  policy.StartBegan(t0);
  EXPECT_EQ(policy.CrashedByTask(t0 + absl::Milliseconds(30)), absl::Milliseconds(70));
  EXPECT_EQ(policy.CrashedByTask(t0 + absl::Milliseconds(100)), absl::ZeroDuration());
  EXPECT_EQ(policy.CrashedByTask(t0 + absl::Seconds(5)), absl::ZeroDuration());
  // A crash does not count toward the backoff of the next death.
  EXPECT_EQ(policy.DiedWithoutTask(), absl::Milliseconds(400));
}

}  // namespace
}  // namespace cnp::pool
