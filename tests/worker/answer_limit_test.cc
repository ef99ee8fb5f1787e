// The answer limit (Task.max_answer_bytes, the server's --max-call-bytes): a worker stops
// building an answer once it passes the limit and answers Failure ANSWER_TOO_LARGE, small,
// instead of allocating on. Without it, 200 map functions each emitting a 1 MB document built a
// 200 MB answer (three times over: rows, reply, frame) from a 1 MB request.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/process_memory.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kLimit = 1 << 20;

std::string BigDoc(size_t bytes) {
  return absl::StrCat(R"({"_id":"big","blob":")", std::string(bytes, 'x'), R"("})");
}

Task Limited(Task task, int64_t limit = kLimit) {
  task.set_max_answer_bytes(limit);
  return task;
}

void ExpectTooLarge(const Reply& reply) {
  ASSERT_TRUE(reply.has_failure()) << reply.ShortDebugString().substr(0, 300);
  EXPECT_EQ(reply.failure().code(), v1::Failure::ANSWER_TOO_LARGE);
  EXPECT_THAT(reply.failure().message(), HasSubstr(absl::StrCat(kLimit)));
  EXPECT_THAT(reply.failure().message(), HasSubstr("--max-call-bytes"));
  EXPECT_EQ(reply.logs_size(), 0);
  EXPECT_EQ(reply.function_logs_size(), 0);
  EXPECT_LE(static_cast<int64_t>(reply.ByteSizeLong()), kLimit);
}

// The reviewer's shape: one document, the same function many times. The worker stops at the
// limit: its peak memory stays near where it was, and it serves the next task as before.
TEST(AnswerLimitTest, ManyFunctionsOnOneDocumentStopAtTheLimit) {
  auto worker = WorkerProcess::StartWithFunctions();
  const std::string doc = BigDoc(1 << 20);
  std::vector<std::string> functions(200, "worker_answers.echo");
  // Warm: the module imported and a 1 MB document parsed once.
  Reply warm = worker->Call(Limited(MapTask({"worker_answers.echo"}, {doc}), 4 * kLimit));
  ASSERT_TRUE(warm.has_map()) << warm.ShortDebugString().substr(0, 300);
  const int64_t before = ::cnp::testing::ProcStatusBytes(worker->pid(), "VmRSS");

  Reply reply = worker->Call(Limited(MapTask(functions, {doc})));
  ExpectTooLarge(reply);
  const int64_t peak = ::cnp::testing::ProcStatusBytes(worker->pid(), "VmHWM");
  // Unbounded, this answer is 200 MB, built three times over.
  EXPECT_LT(peak - before, 32 << 20) << "before " << before << ", peak " << peak;

  Reply next = worker->Call(Limited(MapTask({"worker_answers.echo"}, {R"({"_id":"s"})"})));
  ASSERT_TRUE(next.has_map()) << next.ShortDebugString();
  EXPECT_EQ(next.map().results(0).rows(), R"([[["s",{"_id":"s"}]]])");
}

// An answer under the limit is whole; the limit counts the whole reply, not each row.
TEST(AnswerLimitTest, AnAnswerUnderTheLimitIsWholeAndOneOverItIsRefused) {
  auto worker = WorkerProcess::StartWithFunctions();
  const std::string doc = BigDoc(300 << 10);
  Reply fits = worker->Call(Limited(MapTask({"worker_answers.echo", "worker_answers.echo"}, {doc})));
  ASSERT_TRUE(fits.has_map()) << fits.ShortDebugString().substr(0, 300);
  EXPECT_EQ(fits.map().results(0).rows(),
            absl::StrCat(R"([[["big",)", doc, R"(]],[["big",)", doc, "]]]"));
  // Four copies fit in no single document's rows; two documents of two copies each fit in no
  // reply either.
  ExpectTooLarge(worker->Call(Limited(MapTask(std::vector<std::string>(4, "worker_answers.echo"), {doc}))));
  ExpectTooLarge(worker->Call(
      Limited(MapTask({"worker_answers.echo", "worker_answers.echo"}, {doc, doc}))));
  // No limit: as before.
  Reply unlimited = worker->Call(MapTask(std::vector<std::string>(4, "worker_answers.echo"), {doc}));
  ASSERT_TRUE(unlimited.has_map());
}

// A function that catches what emit() raises past the limit cannot go on growing the answer:
// every emit is refused, and the task still fails as a whole (never a partial result).
TEST(AnswerLimitTest, CatchingTheRefusalDoesNotGetPastIt) {
  auto worker = WorkerProcess::StartWithFunctions();
  ExpectTooLarge(worker->Call(Limited(MapTask({"worker_answers.keeps_emitting"}, {BigDoc(10 << 10)}))));
}

// log() lines are part of the answer: fifty copies of a 100 kB line do not fit in 1 MiB.
TEST(AnswerLimitTest, LogLinesCount) {
  auto worker = WorkerProcess::StartWithFunctions();
  ExpectTooLarge(worker->Call(Limited(MapTask({"worker_answers.logs_the_doc"}, {BigDoc(100 << 10)}))));
}

// A reduce whose small Python result has a 20 MB JSON form is stopped in the writing.
TEST(AnswerLimitTest, AReduceResultIsBoundedInItsJson) {
  auto worker = WorkerProcess::StartWithFunctions();
  ExpectTooLarge(worker->Call(Limited(
      ReduceTask({"worker_answers.same_value_many_times"}, R"([[["k","id"],1]])", false))));
  Reply unlimited = worker->Call(
      ReduceTask({"worker_answers.same_value_many_times"}, R"([[["k","id"],1]])", false));
  ASSERT_TRUE(unlimited.has_reduce()) << unlimited.ShortDebugString().substr(0, 300);
  EXPECT_EQ(unlimited.reduce().results(0).size(), 200u * 100'003 + 1);
}

// A show whose log() lines leave no room for its response, nor for the render_error that
// would say its response is not JSON: the task is too large (the worker read an empty result
// there before, and crashed), and the worker serves the next one.
TEST(AnswerLimitTest, AResponseWithNoRoomLeftIsTooLargeNotACrash) {
  auto worker = WorkerProcess::StartWithFunctions();
  ExpectTooLarge(worker->Call(Limited(DesignTask(
      cnp::v1::SHOW, "worker_answers.show_fills_the_answer", R"([{"_id":"a"},{}])"))));
  Reply next = worker->Call(Limited(MapTask({"worker_answers.echo"}, {R"({"_id":"s"})"})));
  ASSERT_TRUE(next.has_map()) << next.ShortDebugString();
}

}  // namespace
}  // namespace cnp::worker::testing
