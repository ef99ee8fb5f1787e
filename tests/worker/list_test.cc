// The interactive list exchange (list_start / list_row / ListStep), step by step as CouchDB
// 3.4.3 drives couchjs in /work/shared/fixtures/couchdb-3.4.3-js/list.txt.
#include "gtest/gtest.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

Task ListStartTask(const std::string& function) {
  Task task;
  task.mutable_list_start()->set_function(function);
  task.mutable_list_start()->set_head(R"({"total_rows":20,"offset":0})");
  task.mutable_list_start()->set_req(R"({"method":"GET","query":{"limit":"3"}})");
  return task;
}

Task RowTask(const std::string& row) {
  Task task;
  task.mutable_list_row()->set_row(row);
  return task;
}

Task EndTask() { return RowTask(""); }

class ListTest : public ::testing::Test {
 protected:
  void SetUp() override { worker_ = WorkerProcess::StartWithFunctions(); }

  // Sends a task and expects a ListStep; returns its reply line.
  std::string Step(const Task& task, bool done) {
    Reply reply = worker_->Call(task);
    EXPECT_TRUE(reply.has_list_step()) << reply.DebugString();
    EXPECT_EQ(reply.list_step().done(), done) << reply.DebugString();
    last_ = reply;
    return reply.list_step().reply();
  }

  std::unique_ptr<WorkerProcess> worker_;
  Reply last_;
};

TEST_F(ListTest, MatchesTheCouchDbTranscript) {
  EXPECT_EQ(Step(ListStartTask("worker_design.rows"), false),
            R"(["start",["total_rows=20 offset=0\n"],{"headers":{"Content-Type":"text/plain"}}])");
  EXPECT_EQ(Step(RowTask(R"({"id":"doc-0003","key":"Kyoto","value":3})"), false),
            R"(["chunks",["doc-0003 Kyoto 3\n"]])");
  EXPECT_EQ(Step(RowTask(R"({"id":"doc-0007","key":"Kyoto","value":7})"), false),
            R"(["chunks",["doc-0007 Kyoto 7\n"]])");
  EXPECT_EQ(Step(EndTask(), true), R"(["end",["END\n"]])");

  // The worker is free for the next task afterwards.
  Reply reply = worker_->Call(ResolveTask({"worker_design.rows"}));
  EXPECT_TRUE(reply.has_resolve());
}

TEST_F(ListTest, GeneratorFormWithLogsPerStep) {
  EXPECT_EQ(Step(ListStartTask("worker_design.generator_rows"), false),
            R"(["start",["id,key\n"],{"headers":{"Content-Type":"text/csv"}}])");
  EXPECT_EQ(Step(RowTask(R"({"id":"a","key":"k"})"), false), R"(["chunks",["a,k\n"]])");
  ASSERT_EQ(last_.logs_size(), 1);
  EXPECT_EQ(last_.logs(0), "row a");
  EXPECT_EQ(Step(EndTask(), true), R"(["end",[]])");
}

TEST_F(ListTest, FunctionThatNeverAsksForRowsStillSendsStartFirst) {
  EXPECT_EQ(Step(ListStartTask("worker_design.no_rows"), false),
            R"(["start",["head only"],{"headers":{}}])");
  EXPECT_EQ(Step(EndTask(), true), R"(["end",["tail"]])");
}

TEST_F(ListTest, FunctionMayStopEarly) {
  EXPECT_EQ(Step(ListStartTask("worker_design.first_only"), false), R"(["start",[],{"headers":{}}])");
  EXPECT_EQ(Step(RowTask(R"({"id":"a","key":1,"value":2})"), true), R"(["end",["first=a","stop"]])");
}

// couch-named-python caught a list's Redirect and sent start({"code": 302, "headers":
// {"Location": url}}) with the chunks sent before it, then ended the list at the first row.
TEST_F(ListTest, RedirectBeforeTheFirstRowIsTheStart) {
  EXPECT_EQ(Step(ListStartTask("worker_design.list_redirects"), false),
            R"(["start",["before"],{"code":302,"headers":{"Location":"/z"}}])");
  EXPECT_EQ(Step(RowTask(R"({"id":"a"})"), true), R"(["end",[]])");
}

// Once the start has gone out its code cannot change: a later Redirect stays a render_error.
TEST_F(ListTest, RedirectAfterTheStartIsARenderError) {
  EXPECT_EQ(Step(ListStartTask("worker_design.list_redirects_after_a_row"), false),
            R"(["start",[],{"headers":{}}])");
  Reply reply = worker_->Call(RowTask(R"({"id":"a"})"));
  ASSERT_TRUE(reply.has_list_step()) << reply.DebugString();
  EXPECT_TRUE(reply.list_step().done());
  EXPECT_EQ(reply.list_step().reply().rfind(R"(["error","render_error","Redirect: /z)", 0), 0u)
      << reply.list_step().reply();
}

TEST_F(ListTest, StartCalledLateRidesOnTheNextStep) {
  EXPECT_EQ(Step(ListStartTask("worker_design.late_start"), false), R"(["start",[],{"headers":{}}])");
  EXPECT_EQ(Step(RowTask(R"({"id":"a"})"), false),
            R"(["chunks",["after start"],{"code":201,"headers":{"X-Late":"yes"}}])");
  EXPECT_EQ(Step(RowTask(R"({"id":"b"})"), true), R"(["end",["done"]])");
}

// Found by a review: a list function that caught the refusal of a log() line past its answer
// limit sent its next step as if nothing had happened (the next row's task reset the budget),
// where the worker's README promises that a function catching it gets no further. The list
// ends there, answered ANSWER_TOO_LARGE.
TEST_F(ListTest, AListThatCatchesARefusedLogLineGetsNoFurther) {
  Task start = ListStartTask("worker_design.list_catches_a_refused_log");
  start.set_max_answer_bytes(100000);
  Reply reply = worker_->Call(start);
  ASSERT_TRUE(reply.has_failure()) << reply.ShortDebugString().substr(0, 300);
  EXPECT_EQ(reply.failure().code(), v1::Failure::ANSWER_TOO_LARGE);
  // The worker serves on.
  EXPECT_EQ(Step(ListStartTask("worker_design.first_only"), false), R"(["start",[],{"headers":{}}])");
}

TEST_F(ListTest, MalformedRowAbortsTheListWithBadInput) {
  Step(ListStartTask("worker_design.rows"), false);
  Reply reply = worker_->Call(RowTask("{not json"));
  ASSERT_TRUE(reply.has_failure()) << reply.DebugString();
  EXPECT_EQ(reply.failure().code(), v1::Failure::BAD_INPUT);
  EXPECT_EQ(reply.failure().message(), "list_row: invalid JSON at byte 1: Missing a name for object member.");
}

TEST_F(ListTest, RaisingFunctionEndsWithARenderErrorLoggedFirst) {
  Step(ListStartTask("worker_design.list_crashes"), false);
  EXPECT_EQ(Step(RowTask(R"({"id":"a"})"), true),
            R"(["error","render_error","KeyError: 'boom')" +
                RaisedAt("worker_design.py", "raise KeyError(\"boom\")", "list_crashes") + R"("])");
  EXPECT_EQ(last_.list_step().error().type(), "KeyError");
  ASSERT_EQ(last_.logs_size(), 1);
  EXPECT_EQ(last_.logs(0).rfind("function raised error: KeyError('boom') \nstacktrace: ", 0), 0u)
      << last_.logs(0);
  // The stack starts at the user's function: none of couch_named_python's frames (the list's
  // rendering, _render.py, called it).
  EXPECT_NE(last_.logs(0).find("in list_crashes"), std::string::npos) << last_.logs(0);
  EXPECT_EQ(last_.logs(0).find("couch_named_python"), std::string::npos) << last_.logs(0);
}

TEST_F(ListTest, UnauthorizedEndsTheListWithCouchDbsUnauthorized) {
  Step(ListStartTask("worker_design.list_forbidden"), false);
  EXPECT_EQ(Step(RowTask(R"({"id":"a"})"), true), R"(["error","unauthorized","log in to list"])");
  EXPECT_FALSE(last_.list_step().has_error());
  EXPECT_EQ(last_.logs_size(), 0);
}

TEST_F(ListTest, AnotherTaskDuringAListIsRefused) {
  Step(ListStartTask("worker_design.rows"), false);
  Reply reply = worker_->Call(ResolveTask({"worker_design.rows"}));
  ASSERT_TRUE(reply.has_failure()) << reply.DebugString();
  EXPECT_EQ(reply.failure().code(), v1::Failure::BAD_INPUT);
  // The list is over; the worker serves again.
  EXPECT_TRUE(worker_->Call(ResolveTask({"worker_design.rows"})).has_resolve());
}

TEST_F(ListTest, RowWithoutAListIsRefused) {
  Reply reply = worker_->Call(RowTask(R"({"id":"a"})"));
  ASSERT_TRUE(reply.has_failure());
  EXPECT_EQ(reply.failure().code(), v1::Failure::BAD_INPUT);
}

}  // namespace
}  // namespace cnp::worker::testing
