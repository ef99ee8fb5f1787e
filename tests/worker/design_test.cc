// Filters, view filters, shows, updates, rewrites and whole lists over a real cnp-worker.
#include "gtest/gtest.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

using cnp::v1::DesignFunctionResponse;

const char kReq[] = R"({"method":"GET","query":{"town":"Oslo","x":"1"},"path":["db","_design","d","_show","hello","doc-1"]})";
const char kOslo[] = R"({"_id":"doc-1","town":"Oslo","n":1})";
const char kLima[] = R"({"_id":"doc-2","town":"Lima","n":2})";

class DesignTest : public ::testing::Test {
 protected:
  void SetUp() override { worker_ = WorkerProcess::StartWithFunctions(); }

  DesignFunctionResponse Run(cnp::v1::DesignFunctionKind kind, const std::string& function,
                             const std::string& args) {
    Reply reply = worker_->Call(DesignTask(kind, function, args));
    EXPECT_TRUE(reply.has_design()) << reply.DebugString();
    return reply.design();
  }

  std::unique_ptr<WorkerProcess> worker_;
};

TEST_F(DesignTest, FilterAnswersOneBoolPerDocument) {
  std::string args = std::string("[[") + kOslo + "," + kLima + "]," + kReq + "]";
  EXPECT_EQ(Run(cnp::v1::FILTER, "worker_design.by_town", args).reply(), "[true,[true,false]]");
}

TEST_F(DesignTest, RaisingFilterIsARenderErrorNamingTheDocument) {
  std::string args = std::string("[[{\"_id\":\"x\"}],") + kReq + "]";
  DesignFunctionResponse response = Run(cnp::v1::FILTER, "worker_design.filter_crashes", args);
  EXPECT_EQ(response.reply(), R"(["error","render_error","KeyError: 'town'"])");
  EXPECT_EQ(response.error().doc_id(), "x");
  EXPECT_EQ(response.error().type(), "KeyError");
}

TEST_F(DesignTest, ViewFilterIsTrueWhenTheMapFunctionEmits) {
  std::string args = std::string("[[") + kOslo + R"(,{"_id":"no-town"}]])";
  DesignFunctionResponse response = Run(cnp::v1::VIEW_FILTER, "worker_views.town_emit", args);
  EXPECT_EQ(response.reply(), "[true,[true,false]]");
  ASSERT_EQ(response.logs_size(), 1);  // the raising map function is logged, not fatal
  EXPECT_EQ(response.logs(0), "map function raised KeyError: 'town' for doc 'no-town'");
}

TEST_F(DesignTest, ShowReturnsTheResponse) {
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.hello", std::string("[") + kOslo + "," + kReq + "]").reply(),
            R"(["resp",{"body":"Hello Oslo x=1","headers":{"Content-Type":"text/plain"}}])");
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.plain_string", std::string("[null,") + kReq + "]").reply(),
            R"(["resp",{"body":"just a string for null"}])");
}

TEST_F(DesignTest, ShowNotFoundRedirectAndErrors) {
  std::string args = std::string("[") + kOslo + "," + kReq + "]";
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.missing", args).reply(),
            R"(["error","not_found","custom missing"])");
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.missing_default", args).reply(),
            R"(["error","not_found","document not found"])");
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.go_away", args).reply(),
            R"(["resp",{"code":301,"headers":{"Location":"/elsewhere"}}])");
  DesignFunctionResponse crash = Run(cnp::v1::SHOW, "worker_design.show_crashes", args);
  EXPECT_EQ(crash.reply(), R"(["error","render_error","KeyError: 'nope'"])");
  EXPECT_EQ(crash.error().function(), "worker_design.show_crashes");
  EXPECT_EQ(crash.error().doc_id(), "doc-1");
}

TEST_F(DesignTest, SysExitInAShowIsARenderErrorAndTheWorkerCarriesOn) {
  std::string args = std::string("[") + kOslo + "," + kReq + "]";
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.exits", args).reply(),
            R"(["error","render_error","SystemExit: 3"])");
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.plain_string", args).reply(),
            R"(["resp",{"body":"just a string for doc-1"}])");
}

TEST_F(DesignTest, UpdateReturnsTheDocAndTheResponse) {
  const char post[] = R"({"method":"POST","query":{}})";
  EXPECT_EQ(Run(cnp::v1::UPDATE, "worker_design.bump", std::string("[") + kOslo + "," + post + "]").reply(),
            R"(["up",{"_id":"doc-1","town":"Oslo","n":2},{"json":{"n":2}}])");
  EXPECT_EQ(Run(cnp::v1::UPDATE, "worker_design.bump", std::string("[null,") + post + "]").reply(),
            R"(["up",null,{"body":"nothing to bump"}])");
  EXPECT_EQ(Run(cnp::v1::UPDATE, "worker_design.bump", std::string("[null,") + kReq + "]").reply(),
            R"(["error","method_not_allowed","Update functions do not allow GET"])");
}

TEST_F(DesignTest, RewriteAnswersOkOrNoDispatchRule) {
  EXPECT_EQ(Run(cnp::v1::REWRITE, "worker_design.rewrite", R"([{"path":["db","x"],"query":{"a":"b"}}])").reply(),
            R"(["ok",{"path":"/db/_design/x/_view/v","query":{"a":"b"}}])");
  EXPECT_EQ(Run(cnp::v1::REWRITE, "worker_design.rewrite", R"([{"path":["db","none"],"query":{}}])").reply(),
            R"(["no_dispatch_rule"])");
}

const char kHead[] = R"({"total_rows":20,"offset":0})";
const char kRows[] = R"([{"id":"doc-0003","key":"Kyoto","value":3},{"id":"doc-0007","key":"Kyoto","value":7}])";

TEST_F(DesignTest, WholeListCollectsEveryChunk) {
  std::string args = std::string("[") + kHead + "," + kReq + "," + kRows + "]";
  EXPECT_EQ(Run(cnp::v1::LIST, "worker_design.rows", args).reply(),
            R"(["end",["total_rows=20 offset=0\n","doc-0003 Kyoto 3\n","doc-0007 Kyoto 7\n","END\n"],{"headers":{"Content-Type":"text/plain"}}])");
}

TEST_F(DesignTest, WholeListGeneratorForm) {
  std::string args = std::string("[") + kHead + "," + kReq + "," + kRows + "]";
  DesignFunctionResponse response = Run(cnp::v1::LIST, "worker_design.generator_rows", args);
  EXPECT_EQ(response.reply(),
            R"(["end",["id,key\n","doc-0003,Kyoto\n","doc-0007,Kyoto\n"],{"headers":{"Content-Type":"text/csv"}}])");
  ASSERT_EQ(response.logs_size(), 2);
  EXPECT_EQ(response.logs(1), "row doc-0007");
}

TEST_F(DesignTest, BadArgumentsAreBadInput) {
  Reply reply = worker_->Call(DesignTask(cnp::v1::LIST, "worker_design.rows", "[{}]"));
  ASSERT_TRUE(reply.has_failure());
  EXPECT_EQ(reply.failure().code(), v1::Failure::BAD_INPUT);
  EXPECT_EQ(reply.failure().message(), "args has 1 elements; this kind takes 3");
}

}  // namespace
}  // namespace cnp::worker::testing
