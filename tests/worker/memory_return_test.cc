// One large task must not leave the worker holding its size for good: every worker is counted
// against --worker-memory-mb and the host's memory for as long as it lives, and most tasks are
// one document. After a 48 MB task the worker gives its read buffer back and has glibc return
// the freed heap to the system.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/process_memory.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

using ::cnp::testing::ProcStatusBytes;

std::string Doc(int i, size_t padding) {
  return absl::StrCat(R"({"_id":"d)", i, R"(","town":"Oslo","padding":")",
                      std::string(padding, 'x'), R"("})");
}

TEST(MemoryReturnTest, ALargeTasksMemoryIsGivenBackAfterItsAnswer) {
  auto worker = WorkerProcess::StartWithFunctions();
  // Warm: the module imported, a small document mapped.
  Reply warm = worker->Call(MapTask({"worker_views.town"}, {Doc(0, 10)}));
  ASSERT_TRUE(warm.has_map()) << warm.ShortDebugString();
  const int64_t before = ProcStatusBytes(worker->pid(), "VmRSS");

  std::vector<std::string> docs;
  for (int i = 0; i < 6; ++i) docs.push_back(Doc(i, 8 << 20));
  Reply large = worker->Call(MapTask({"worker_views.town"}, docs));
  ASSERT_TRUE(large.has_map());
  ASSERT_EQ(large.map().results_size(), 6);
  EXPECT_EQ(large.map().results(5).rows(), R"([[["Oslo",1]]])");
  // The memory is given back once the answer is written: by the time the next task is
  // answered, for sure.
  Reply next = worker->Call(MapTask({"worker_views.town"}, {Doc(7, 10)}));
  ASSERT_TRUE(next.has_map());
  EXPECT_EQ(next.map().results(0).rows(), R"([[["Oslo",1]]])");
  const int64_t peak = ProcStatusBytes(worker->pid(), "VmHWM");
  const int64_t after = ProcStatusBytes(worker->pid(), "VmRSS");
  // The task did take its size (else this test shows nothing)...
  EXPECT_GT(peak - before, 40 << 20) << "before " << before << ", peak " << peak;
  // ...and gave it back.
  EXPECT_LT(after - before, 8 << 20) << "before " << before << ", after " << after;
}

}  // namespace
}  // namespace cnp::worker::testing
