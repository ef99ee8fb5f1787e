// A direct session leaves a reduce line's values to the worker's one walk over them, the parse
// that builds them for Python (service/couchdb/command.h: ReduceValues). These tests hold it to
// the answers of a session that checks every line whole before running anything (the server's,
// run here over the same real worker): broken lines end both alike, to the byte of the reason,
// and every other line gets the same answer.
#include <fcntl.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/couchdb/query_session.h"
#include "service/pool/task_runner.h"
#include "tests/support/worker_process.h"

namespace cnp::worker {
namespace {

using testing::Reply;
using testing::Task;
using testing::WorkerProcess;
using ::testing::HasSubstr;

// The pool of one real worker, for the checked session.
class OneWorker final : public pool::TaskRunner {
 public:
  explicit OneWorker(WorkerProcess& worker) : worker_(worker) {}
  absl::StatusOr<Reply> Run(const Task& task, absl::Time) override { return worker_.Call(task); }
  absl::StatusOr<std::unique_ptr<pool::WorkerLease>> Lease(absl::Time) override {
    return absl::UnimplementedError("no lists here");
  }

 private:
  WorkerProcess& worker_;
};

// What a session answered one line with, and whether it ended there.
struct Answer {
  std::string lines;  // newline-separated
  bool ended = false;
  bool operator==(const Answer&) const = default;
};

std::ostream& operator<<(std::ostream& out, const Answer& answer) {
  return out << (answer.ended ? "(ends) " : "") << answer.lines;
}

Answer Checked(WorkerProcess& worker, const std::string& line) {
  OneWorker runner(worker);
  couchdb::QuerySession session(runner);
  std::optional<cnp::v1::SessionOutput> out = session.Handle(line);
  Answer answer;
  if (!out.has_value()) return answer;
  answer.lines = absl::StrJoin(out->lines(), "\n");
  answer.ended = out->exit();
  return answer;
}

// One direct session on `worker`: the line, then the end of CouchDB's input.
Answer Direct(WorkerProcess& worker, const std::string& line) {
  int commands[2], answers[2];
  EXPECT_EQ(::pipe2(commands, O_CLOEXEC), 0);
  EXPECT_EQ(::pipe2(answers, O_CLOEXEC), 0);
  Task task;
  task.mutable_direct_session()->set_id("reduce-line-test");
  EXPECT_TRUE(worker.SendWithDescriptors(task, {commands[0], answers[1]}).ok());
  ::close(commands[0]);
  ::close(answers[1]);
  const std::string input = line + "\n";
  EXPECT_EQ(::write(commands[1], input.data(), input.size()),
            static_cast<ssize_t>(input.size()));
  ::close(commands[1]);
  std::string output;
  char chunk[4096];
  for (ssize_t n; (n = ::read(answers[0], chunk, sizeof chunk)) > 0;) output.append(chunk, n);
  ::close(answers[0]);
  absl::StatusOr<Reply> end = worker.Receive();
  EXPECT_TRUE(end.ok() && end->has_session_end()) << line;
  Answer answer;
  if (!output.empty() && output.back() == '\n') output.pop_back();
  answer.lines = output;
  answer.ended = end.ok() && end->session_end().reason() == v1::SessionEnd::PROTOCOL_EXIT;
  return answer;
}

constexpr char kReduce[] =
    R"(["reduce",["fixture_fns.count_total|2"],[[["a","d1"],1],[["b","d2"],20]]])";

std::vector<std::string> BrokenAndWholeLines() {
  std::vector<std::string> lines = {
      kReduce,
      R"(["rereduce",["fixture_fns.count_total|2"],[{"count":1,"total":2},{"count":2,"total":3}]])",
      // Arguments after the values are ignored.
      R"(["reduce",["fixture_fns.count_total|2"],[[["a","d1"],1]],"context"])",
      R"( [ "reduce" , [ "fixture_fns.count_total|2" ] , [ [ [ "a" , "d1" ] , 1 ] ] ] )",
      // A truncated array.
      R"(["reduce",["fixture_fns.count_total|2"],[[["a","d1"],1],[["b","d2"])",
      R"(["reduce",["fixture_fns.count_total|2"],[[["a","d1"],1],)",
      // A bad string escape.
      R"(["reduce",["fixture_fns.count_total|2"],[[["a\q","d1"],1]]])",
      // Trailing garbage, after the values and after the line.
      R"(["reduce",["fixture_fns.count_total|2"],[[["a","d1"],1]] x])",
      R"(["reduce",["fixture_fns.count_total|2"],[[["a","d1"],1]]] x)",
      R"(["reduce",["fixture_fns.count_total|2"],[[["a","d1"],1]]]])",
      R"(["reduce",["fixture_fns.count_total|2"],[[["a","d1"],1]],])",
      R"(["reduce",["fixture_fns.count_total|2"],[[["a","d1"],1]],"context)",
      // Bytes that are not UTF-8: JSON to the checker, not to Python (an error, not the end).
      "[\"reduce\",[\"fixture_fns.count_total|2\"],[[[\"a\xff\",\"d1\"],1]]]",
      // A number too big for a double.
      R"(["reduce",["fixture_fns.count_total|2"],[[["a","d1"],1e400]]])",
      // Nested too deep for the worker, then JSON or not.
      absl::StrCat(R"(["reduce",["fixture_fns.count_total|2"],[[["a","d1"],)",
                   std::string(5000, '['), std::string(5000, ']'), "]]]"),
      absl::StrCat(R"(["reduce",["fixture_fns.count_total|2"],[[["a","d1"],)",
                   std::string(5000, '['), std::string(4999, ']'), "}]]]"),
      // Values of the wrong shape, and a function that does not load: errors, not the end...
      R"(["reduce",["fixture_fns.count_total|2"],{"a":1}])",
      R"(["reduce",["fixture_fns.count_total|2"],[1,2]])",
      R"(["reduce",["fixture_fns.nope"],[[["a","d1"],1]]])",
      // ...unless the line is broken too.
      R"(["reduce",["fixture_fns.nope"],[[["a","d1"],1]])",
  };
  // And the plain line cut at every byte.
  const std::string whole = kReduce;
  for (size_t at = 1; at < whole.size(); ++at) lines.push_back(whole.substr(0, at));
  return lines;
}

TEST(ReduceLineTest, ADirectSessionAnswersEveryReduceLineAsACheckedSession) {
  std::unique_ptr<WorkerProcess> worker = WorkerProcess::StartWithFunctions();
  ASSERT_NE(worker, nullptr);
  size_t ended = 0;
  for (const std::string& line : BrokenAndWholeLines()) {
    const Answer checked = Checked(*worker, line);
    EXPECT_EQ(Direct(*worker, line), checked) << line;
    ended += checked.ended;
  }
  EXPECT_GT(ended, 60u);  // the broken lines were broken
}

TEST(ReduceLineTest, BrokenLinesEndTheSessionWithTheReasonAndByte) {
  std::unique_ptr<WorkerProcess> worker = WorkerProcess::StartWithFunctions();
  ASSERT_NE(worker, nullptr);
  const std::string head = R"(["reduce",["fixture_fns.count_total|2"],)";
  const std::string truncated = head + R"([[["a","d1"],1],[["b","d2"])";
  EXPECT_EQ(Direct(*worker, truncated),
            (Answer{absl::StrCat(R"(["fatal","query_protocol_error","invalid JSON at byte )",
                                 truncated.size(),
                                 R"(: Missing a comma or ']' after an array element."])"),
                    true}));
  const std::string bad_escape = head + R"([[["a\q","d1"],1]]])";
  EXPECT_EQ(Direct(*worker, bad_escape),
            (Answer{absl::StrCat(R"(["fatal","query_protocol_error","invalid JSON at byte )",
                                 bad_escape.find('\\'),
                                 R"(: Invalid escape character in string."])"),
                    true}));
  const std::string trailing = head + R"([[["a","d1"],1]]] x)";
  EXPECT_EQ(Direct(*worker, trailing),
            (Answer{absl::StrCat(R"(["fatal","query_protocol_error",)",
                                 R"("text after the command at byte )", trailing.size() - 2,
                                 R"(: a line holds one JSON array and nothing else"])"),
                    true}));
  // Not UTF-8: the values' error, and the session goes on.
  Answer not_utf8 = Direct(*worker, head + "[[[\"a\xff\",\"d1\"],1]]]");
  EXPECT_FALSE(not_utf8.ended);
  EXPECT_THAT(not_utf8.lines, HasSubstr(R"(["error","bad_input","kvs: invalid JSON at byte )"));
  // A whole line is reduced.
  EXPECT_EQ(Direct(*worker, kReduce), (Answer{R"([true,[{"count":2,"total":21}]])", false}));
}

// The worker's own task loop takes a SessionLine too (the server could send one).
TEST(ReduceLineTest, TheTaskLoopJudgesASessionLine) {
  std::unique_ptr<WorkerProcess> worker = WorkerProcess::StartWithFunctions();
  ASSERT_NE(worker, nullptr);
  Task task;
  task.mutable_reduce()->add_functions("fixture_fns.count_total|2");
  task.mutable_reduce()->set_kvs(R"([[["a","d1"],1],[["b","d2"],2]],"ctx"])");
  task.mutable_session_line()->set_offset(42);
  Reply reply = worker->Call(task);
  ASSERT_TRUE(reply.has_reduce()) << reply.DebugString();
  EXPECT_EQ(reply.reduce().results(0), R"({"count":2,"total":3})");

  const std::string cut = R"([[["a","d1"],1],[["b","d2"],2]])";  // the line's bracket is gone
  task.mutable_reduce()->set_kvs(cut);
  reply = worker->Call(task);
  EXPECT_EQ(reply.failure().code(), v1::Failure::BAD_LINE) << reply.DebugString();
  EXPECT_EQ(reply.failure().message(),
            absl::StrCat("invalid JSON at byte ", 42 + cut.size(),
                         ": Missing a comma or ']' after an array element."));
}

}  // namespace
}  // namespace cnp::worker
