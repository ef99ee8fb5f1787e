// What one Resolve task may cost a worker: a name asked again is resolved once, an answer past
// the limit stops as it grows, and "did you mean" lists the path once per task however many
// names are misspelt. Before, a Resolve of 3.9 million names took a worker to 1.37 GB before its
// answer was found too large, and 1,000 misspelt module names took 2.7 s of its CPU (100,000
// held it for the whole --call-timeout).
#include <sys/types.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/process_memory.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The CPU seconds (user and system) `pid` has used.
double CpuSeconds(pid_t pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  const std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // The fields after the command's closing parenthesis: state is the first, utime the 12th.
  const std::vector<std::string> fields =
      absl::StrSplit(text.substr(text.rfind(')') + 2), ' ');
  return static_cast<double>(std::stoll(fields[11]) + std::stoll(fields[12])) /
         static_cast<double>(::sysconf(_SC_CLK_TCK));
}

TEST(ResolveCostTest, AnAnswerPastTheLimitStopsAsItGrows) {
  auto worker = WorkerProcess::StartWithFunctions();
  ASSERT_TRUE(worker->Call(ResolveTask({"worker_views.town"})).has_resolve());
  const int64_t before = ::cnp::testing::ProcStatusBytes(worker->pid(), "VmRSS");

  // 17 MB of names whose answer would be 60 MB; 1 MiB allowed.
  Task task = ResolveTask(std::vector<std::string>(1'000'000, "worker_views.town"));
  task.set_max_answer_bytes(1 << 20);
  const Reply reply = worker->Call(task);
  ASSERT_TRUE(reply.has_failure()) << reply.ShortDebugString().substr(0, 300);
  EXPECT_EQ(reply.failure().code(), v1::Failure::ANSWER_TOO_LARGE);
  // The request itself takes about 75 MB here; the whole answer, built, took 330 MB more.
  const int64_t peak = ::cnp::testing::ProcStatusBytes(worker->pid(), "VmHWM");
  EXPECT_LT(peak - before, 160 << 20) << "before " << before << ", peak " << peak;
}

// One entry per name asked, in order, the same for the same name; a module that raised is
// counted once for the task, not once per time it was named, nor per name in it.
TEST(ResolveCostTest, ANameAskedAgainIsResolvedOnce) {
  auto worker = WorkerProcess::StartWithFunctions();
  const Reply reply = worker->Call(ResolveTask({"worker_import_fails.f", "worker_views.town",
                                                "worker_import_fails.f", "worker_views.town",
                                                "worker_import_fails.f", "worker_import_fails.g"}));
  ASSERT_TRUE(reply.has_resolve()) << reply.ShortDebugString();
  ASSERT_EQ(reply.resolve().functions_size(), 6);
  for (int i : {0, 2, 4}) {
    EXPECT_EQ(reply.resolve().functions(i).function(), "worker_import_fails.f");
    EXPECT_NE(reply.resolve().functions(i).error(), "");
    EXPECT_EQ(reply.resolve().functions(i).SerializeAsString(),
              reply.resolve().functions(0).SerializeAsString());
  }
  for (int i : {1, 3}) {
    EXPECT_EQ(reply.resolve().functions(i).function(), "worker_views.town");
    EXPECT_EQ(reply.resolve().functions(i).error(), "");
    EXPECT_EQ(reply.resolve().functions(i).module(), "worker_views");
  }
  EXPECT_THAT(reply.import_raised(), ElementsAre("worker_import_fails"));
}

TEST(ResolveCostTest, MisspeltModulesListThePathOncePerTask) {
  auto worker = WorkerProcess::StartWithFunctions();
  ASSERT_TRUE(worker->Call(ResolveTask({"worker_views.town"})).has_resolve());
  std::vector<std::string> names;
  for (int i = 0; i < 1000; ++i) names.push_back(absl::StrCat("worker_veiws", i, ".town"));
  names.push_back("worker_veiws.town");
  const double before = CpuSeconds(worker->pid());
  const Reply reply = worker->Call(ResolveTask(names));
  const double spent = CpuSeconds(worker->pid()) - before;
  ASSERT_TRUE(reply.has_resolve()) << reply.ShortDebugString().substr(0, 300);
  ASSERT_EQ(reply.resolve().functions_size(), 1001);
  EXPECT_THAT(reply.resolve().functions(1000).error(),
              HasSubstr("did you mean \"worker_views.town\"?"));
  // About 3 ms a name when each listed the path: 1,000 names took 2.7 s and more.
  EXPECT_LT(spent, 1.0);
}

}  // namespace
}  // namespace cnp::worker::testing
