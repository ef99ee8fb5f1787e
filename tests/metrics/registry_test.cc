// The registry's text exposition: labels escaped, histograms cumulative, cardinality capped.
#include "service/metrics/registry.h"
#include "service/metrics/service_metrics.h"

#include <cmath>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/stderr_lines.h"

namespace cnp::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(RegistryTest, CountersRenderWithHelpTypeAndEscapedLabels) {
  Family<Counter> family("test_escaped_total", "Things counted.", {"name"});
  family.Get({"a \"quoted\"\\name\nline"}).Add(3);
  const std::string text = Registry::Default().Render();
  EXPECT_THAT(text, HasSubstr("# HELP test_escaped_total Things counted.\n"
                              "# TYPE test_escaped_total counter\n"));
  EXPECT_THAT(text, HasSubstr("test_escaped_total{name=\"a \\\"quoted\\\"\\\\name\\nline\"} 3\n"));
}

TEST(RegistryTest, TheSameLabelsFindTheSameSeries) {
  Family<Gauge> family("test_gauge", "A level.", {"kind"});
  Gauge& first = family.Get({"x"});
  first.Add(5);
  family.Get({"x"}).Add(-2);
  EXPECT_EQ(&first, &family.Get({"x"}));
  EXPECT_THAT(Registry::Default().Render(), HasSubstr("test_gauge{kind=\"x\"} 3\n"));
}

TEST(RegistryTest, HistogramBucketsAreCumulativeWithSumAndCount) {
  Family<Histogram> family("test_seconds", "Durations.", {"rpc"}, {0.1, 1});
  Histogram& h = family.Get({"Map"});
  h.Observe(0.0625);
  h.Observe(0.5);
  h.Observe(0.5);
  h.Observe(7);
  const std::string text = Registry::Default().Render();
  EXPECT_THAT(text, HasSubstr("# TYPE test_seconds histogram\n"));
  EXPECT_THAT(text, HasSubstr("test_seconds_bucket{rpc=\"Map\",le=\"0.1\"} 1\n"
                              "test_seconds_bucket{rpc=\"Map\",le=\"1\"} 3\n"
                              "test_seconds_bucket{rpc=\"Map\",le=\"+Inf\"} 4\n"
                              "test_seconds_sum{rpc=\"Map\"} 8.0625\n"
                              "test_seconds_count{rpc=\"Map\"} 4\n"));
}

// What is observed is a duration or a size. A negative one (a clock stepped back) made the sum
// go down, which Prometheus reads as a reset; a NaN made it NaN for good. Both count as 0 now.
TEST(RegistryTest, AHistogramTakesANegativeOrNaNObservationAsZero) {
  Family<Histogram> family("test_clamped_seconds", "Durations.", {"rpc"}, {0.1, 1});
  Histogram& h = family.Get({"Map"});
  h.Observe(0.5);
  h.Observe(-3);
  h.Observe(std::nan(""));
  EXPECT_EQ(h.sum(), 0.5);
  EXPECT_EQ(h.bucket(0), 2u);
  EXPECT_EQ(h.bucket(1), 1u);
  EXPECT_EQ(h.bucket(2), 0u);
}

TEST(RegistryTest, LabelValuesPastTheCapShareOneOtherSeries) {
  Family<Counter> family("test_capped_total", "Capped.", {"function"}, {}, /*max_series=*/3);
  for (int i = 0; i < 10; ++i) family.Get({"f" + std::to_string(i)}).Add();
  const std::string text = Registry::Default().Render();
  EXPECT_THAT(text, HasSubstr("test_capped_total{function=\"f0\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("test_capped_total{function=\"f2\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("function=\"f3\"")));
  EXPECT_THAT(text, HasSubstr("test_capped_total{function=\"other\"} 7\n"));
}

// An operator whose dashboard stops showing new names learns why from the log, once.
TEST(RegistryTest, TheFirstLabelValuePastTheCapIsLogged) {
  Family<Counter> family("test_logged_cap_total", "Capped.", {"function"}, {}, /*max_series=*/2);
  const std::vector<std::string> lines = ::cnp::testing::StderrLinesOf([&family] {
    for (int i = 0; i < 5; ++i) family.Get({"f" + std::to_string(i)}).Add();
  });
  ASSERT_EQ(lines.size(), 1u) << ::testing::PrintToString(lines);
  EXPECT_THAT(lines[0], HasSubstr("test_logged_cap_total has 2 series"));
  EXPECT_THAT(lines[0], HasSubstr("\"other\" (first one: f2)"));
}

// Security review: the function errors were labelled with the name as the call spelled it, and
// a worker reads the version as Python's int() does, so one function's errors could fill the
// registry's series under "f|1", "f|01", "f| +1", ... Now one function is one series.
TEST(FunctionErrorsTest, EverySpellingOfAVersionIsOneSeries) {
  for (const char* spelling : {"rv.f|1", "rv.f|01", "rv.f| +1", "rv.f|1 ", "rv.f|+0001"}) {
    FunctionError(spelling);
  }
  FunctionError("rv.g");
  FunctionError("rv.h|not a number");  // never run by a worker; kept as it came
  const std::string text = Registry::Default().Render();
  EXPECT_THAT(text, HasSubstr("cnp_function_errors_total{function=\"rv.f|1\"} 5\n"));
  EXPECT_THAT(text, Not(HasSubstr("rv.f|01")));
  EXPECT_THAT(text, HasSubstr("cnp_function_errors_total{function=\"rv.g\"} 1\n"));
  EXPECT_EQ(FunctionLabel("rv.h|not a number"), "rv.h|not a number");
}

}  // namespace
}  // namespace cnp::metrics
