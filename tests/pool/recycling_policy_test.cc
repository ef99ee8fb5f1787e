// Whether a worker whose calls ended well takes another (service/pool/recycling_policy.h): each
// reason alone, the order they are named in when several hold, and the rule that a reload
// replaces one worker at a time.
#include "service/pool/recycling_policy.h"

#include <string>

#include "gtest/gtest.h"
#include "service/pool/pool_options.h"

namespace cnp::pool {
namespace {

PoolOptions Options(int64_t max_calls) {
  PoolOptions options;
  options.max_calls_per_worker = max_calls;
  return options;
}

// "why (cause)", or "serves on".
std::string Said(const PoolOptions& options, const AfterCalls& worker) {
  const std::optional<Recycling> r = RecycleAfterCalls(options, worker);
  if (!r.has_value()) return "serves on";
  return std::string(r->why) + " (" + (r->cause == nullptr ? "no cause" : r->cause) + ")";
}

TEST(RecyclingPolicyTest, AHealthyWorkerServesOnWithOrWithoutACallLimit) {
  EXPECT_EQ(Said(Options(0), {.calls = 1'000'000}), "serves on");
  EXPECT_EQ(Said(Options(10), {.calls = 9}), "serves on");
}

TEST(RecyclingPolicyTest, EachReasonAlone) {
  EXPECT_EQ(Said(Options(10), {.calls = 10}), "it reached --max-calls-per-worker (recycle)");
  EXPECT_EQ(Said(Options(10), {.calls = 12}), "it reached --max-calls-per-worker (recycle)");
  EXPECT_EQ(Said(Options(0), {.asked = ReplacementAsked::kOutOfMemory}),
            "it ran out of memory (memory)");
  EXPECT_EQ(Said(Options(0), {.asked = ReplacementAsked::kThreadsLeftRunning}),
            "Python threads a function started were still running after its call (recycle)");
  EXPECT_EQ(Said(Options(0), {.over_memory_cap = true}), "it is over its memory cap (memory)");
  EXPECT_EQ(Said(Options(0), {.stale = true}), "of a reload (reload)");
  EXPECT_EQ(Said(Options(0), {.shutting_down = true}), "the server is shutting down (no cause)");
}

TEST(RecyclingPolicyTest, AReloadReplacesOneWorkerAtATime) {
  // Another slot is starting a worker: this stale one serves on and is replaced later.
  EXPECT_EQ(Said(Options(0), {.stale = true, .another_being_replaced = true}), "serves on");
  // Other reasons do not wait for it.
  EXPECT_EQ(Said(Options(1), {.calls = 1, .stale = true, .another_being_replaced = true}),
            "it reached --max-calls-per-worker (recycle)");
}

TEST(RecyclingPolicyTest, WhenSeveralHoldTheFirstIsNamed) {
  const AfterCalls all{.calls = 5,
                       .asked = ReplacementAsked::kOutOfMemory,
                       .over_memory_cap = true,
                       .stale = true,
                       .shutting_down = true};
  EXPECT_EQ(Said(Options(5), all), "the server is shutting down (no cause)");
  AfterCalls rest = all;
  rest.shutting_down = false;
  EXPECT_EQ(Said(Options(5), rest), "it ran out of memory (memory)");
  rest.asked = ReplacementAsked::kNo;
  EXPECT_EQ(Said(Options(5), rest), "it is over its memory cap (memory)");
  rest.over_memory_cap = false;
  EXPECT_EQ(Said(Options(5), rest), "it reached --max-calls-per-worker (recycle)");
}

}  // namespace
}  // namespace cnp::pool
