// Big documents, the memory cap, and stdout: the worker's edges.
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/common/function_log.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

using ::testing::HasSubstr;

TEST(LimitsTest, TwentyMegabyteDocument) {
  auto worker = WorkerProcess::StartWithFunctions();
  std::string blob(20 << 20, 'x');
  std::string doc = R"({"_id":"huge","blob":")" + blob + R"("})";
  Reply reply = worker->Call(MapTask({"worker_views.size", "worker_views.echo"}, {doc}));
  ASSERT_TRUE(reply.has_map()) << reply.failure().DebugString();
  // The echoed document comes back byte for byte.
  EXPECT_TRUE(reply.map().results(0).rows() == R"([[["huge",20971520]],[[)" + doc + ",null]]]");
}

TEST(LimitsTest, MemoryErrorIsAPerItemErrorAndAsksForRecycling) {
  auto worker = WorkerProcess::StartWithFunctions({"--memory-limit-mb=1024"});
  Reply reply = worker->Call(MapTask({"worker_views.blow_memory", "worker_views.town"},
                                     {R"({"_id":"m","town":"Oslo"})"}));
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).rows(), R"([[],[["Oslo",1]]])");
  ASSERT_EQ(reply.map().results(0).errors_size(), 1);
  EXPECT_EQ(reply.map().results(0).errors(0).type(), "MemoryError");
  EXPECT_TRUE(reply.recycle());

  // Only that reply asks for recycling.
  Reply next = worker->Call(MapTask({"worker_views.town"}, {R"({"_id":"m","town":"Oslo"})"}));
  EXPECT_FALSE(next.recycle());
}

// Memory the worker's own buffer cannot get near the cap is a MemoryError too, not a worker
// dead of a segmentation fault (rapidjson writes through the null pointer realloc returns).
TEST(LimitsTest, RowsTheWorkerCannotFindRoomForAreAMemoryError) {
  auto worker = WorkerProcess::StartWithFunctions({"--memory-limit-mb=400"});
  Reply reply = worker->Call(MapTask({"worker_views.fills_memory_then_emits", "worker_views.town"},
                                     {R"({"_id":"m","town":"Oslo","free_mb":12,"mb":8})"}));
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  EXPECT_EQ(reply.map().results(0).rows(), R"([[],[["Oslo",1]]])");
  ASSERT_EQ(reply.map().results(0).errors_size(), 1);
  EXPECT_EQ(reply.map().results(0).errors(0).type(), "MemoryError");
  EXPECT_TRUE(reply.recycle());
}

// A task whose parse alone needs more than the cap (three million tiny documents: 12 MB on the
// wire, each a string of its own once parsed) is answered MemoryError and asks for recycling.
// Before, the bad_alloc came out of the parse, outside the handler, and the worker died of
// abort(); the call got "unavailable" and a core dump.
TEST(LimitsTest, ATaskTooLargeToParseUnderTheCapIsAMemoryError) {
  auto worker = WorkerProcess::StartWithFunctions({"--memory-limit-mb=110"});
  // Numbered as the server numbers its tasks: the failure answers the task that failed (it
  // echoed the one before, which the server took for a fault of the worker's; a security
  // review).
  Task first = MapTask({"worker_views.town"}, {R"({"_id":"f","town":"Oslo"})"});
  first.set_sequence(1);
  ASSERT_EQ(worker->Call(first).sequence(), 1u);
  std::vector<std::string> docs(3'000'000, "{}");
  Task big = MapTask({"worker_views.town"}, std::move(docs));
  big.set_sequence(2);
  Reply reply = worker->Call(big);
  ASSERT_TRUE(reply.has_failure()) << reply.ShortDebugString().substr(0, 500);
  EXPECT_THAT(reply.failure().message(), HasSubstr("MemoryError"));
  EXPECT_TRUE(reply.recycle());
  EXPECT_EQ(reply.sequence(), 2u);
  // Still serving: it did not abort.
  Reply next = worker->Call(MapTask({"worker_views.town"}, {R"({"_id":"m","town":"Oslo"})"}));
  ASSERT_TRUE(next.has_map()) << next.ShortDebugString();
  EXPECT_EQ(next.map().results(0).rows(), R"([[["Oslo",1]]])");
}

// Under host memory pressure the kernel's OOM killer takes a worker, which the server replaces,
// before cnp-server or CouchDB.
TEST(LimitsTest, TheOomKillerTakesAWorkerFirst) {
  auto worker = WorkerProcess::StartWithFunctions();
  // Once it answers, it has set its score (before its first task).
  Reply reply = worker->Call(MapTask({"worker_views.town"}, {R"({"_id":"m","town":"Oslo"})"}));
  ASSERT_TRUE(reply.has_map()) << reply.DebugString();
  std::ifstream adj(absl::StrCat("/proc/", worker->pid(), "/oom_score_adj"));
  int score = 0;
  ASSERT_TRUE(adj >> score);
  EXPECT_EQ(score, 300);
}

TEST(LimitsTest, PrintGoesToStderrNotTheSocket) {
  auto worker = WorkerProcess::StartWithFunctions();
  Reply reply = worker->Call(MapTask({"worker_views.prints"}, {R"({"_id":"p"})"}));
  ASSERT_TRUE(reply.has_map());
  EXPECT_EQ(reply.map().results(0).rows(), R"([[["printed",true]]])");
  EXPECT_EQ(worker->CloseAndWait(), 0);  // flushes Python's buffered stderr
  EXPECT_THAT(worker->ReadStderr(), HasSubstr("hello from a map function"));
}

// A probe: a function printing what its documents hold let whoever writes documents fill the
// log as fast as the worker ran (50 MB in a second), in raw lines: an id holding a newline
// wrote a line that passed for the server's own. A printed line is an event now, escaped and
// held to the budget of log() lines (kFunctionLogLinesPerSecond).
TEST(LimitsTest, PrintedLinesAreEscapedEventsHeldToTheLogBudget) {
  constexpr char kForged[] = "2026-12-06T00:00:00.000Z ACCESS cnp-server[1] FORGED";
  std::vector<std::string> docs = {absl::StrCat(R"({"_id":"x\n)", kForged, R"("})")};
  for (int i = 0; i < 2000; ++i) docs.push_back(absl::StrCat(R"({"_id":"flood-)", i, R"("})"));
  auto worker = WorkerProcess::StartWithFunctions();
  const absl::Time start = absl::Now();
  Reply reply = worker->Call(MapTask({"worker_views.prints_its_id"}, docs));
  const int64_t seconds = absl::ToInt64Seconds(absl::Now() - start) + 1;
  ASSERT_TRUE(reply.has_map());
  EXPECT_EQ(worker->CloseAndWait(), 0);
  const std::string log = worker->ReadStderr();
  EXPECT_THAT(log, HasSubstr("FORGED"));
  int flood_lines = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    EXPECT_FALSE(absl::StartsWith(line, kForged)) << line;
    if (absl::StrContains(line, "flood-")) {
      ++flood_lines;
      EXPECT_THAT(std::string(line), HasSubstr("function=worker_views.prints_its_id"));
    }
  }
  EXPECT_GE(flood_lines, 1);
  // A second's budget for each second the call could have spanned.
  EXPECT_LE(flood_lines, kFunctionLogLinesPerSecond * (seconds + 1)) << seconds << " s";
}

}  // namespace
}  // namespace cnp::worker::testing
