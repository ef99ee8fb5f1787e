// What a peer's bytes make a worker write to the log is bounded as the server's own protobuf
// lines are (a security review): a task the worker's protobuf refuses to parse (found with a
// function name that was not UTF-8, which the server once put into a task: cnp-server now
// refuses such names where CouchDB's line is read) made the worker's protobuf write one line to
// stderr, into the server's log, for each such task (200 tasks, 200 log lines), past the
// --log-format and the rate limit the server applies to its own (service/common/protobuf_log.h).
// The worker now routes them the same way: at most one line per place in protobuf's code per
// 10 s, in the log's format. Driven here on a real worker directly, with tasks no server sends.
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

constexpr int kTasks = 200;

int CountLinesWith(const std::string& log, absl::string_view text) {
  int count = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, text)) ++count;
  }
  return count;
}

TEST(WorkerProtobufLogTest, TasksItCannotParseDoNotFloodTheLog) {
  std::unique_ptr<WorkerProcess> worker = WorkerProcess::StartWithFunctions();
  // A proto3 string that is not UTF-8: this process's protobuf writes it (saying so once per
  // task, in this test's own log), the worker's refuses to parse it.
  const Task bad = ResolveTask({"svc_fns.\xff"});
  for (int i = 0; i < kTasks; ++i) {
    Reply reply = worker->Call(bad);
    ASSERT_TRUE(reply.has_failure()) << i << ": " << reply.ShortDebugString();
  }
  // The worker goes on.
  Reply resolved = worker->Call(ResolveTask({"worker_views.town"}));
  ASSERT_TRUE(resolved.has_resolve()) << resolved.ShortDebugString();
  ASSERT_EQ(resolved.resolve().functions_size(), 1);
  EXPECT_EQ(resolved.resolve().functions(0).error(), "");

  const std::string log = worker->ReadStderr();
  const int lines = CountLinesWith(log, "invalid UTF-8");
  std::cerr << lines << " log lines about invalid UTF-8 for " << kTasks << " tasks\n";
  // One line in 10 s (and the count of those left out, if one came).
  EXPECT_GE(lines, 1) << "the worker said nothing of the tasks it refused:\n" << log;
  EXPECT_LE(lines, 2) << log.substr(0, 2000);
  EXPECT_EQ(CountLinesWith(log, "[libprotobuf"), 0) << "protobuf's own format, past the log's";
}

}  // namespace
}  // namespace cnp::worker::testing
