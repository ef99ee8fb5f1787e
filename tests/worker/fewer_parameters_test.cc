// Functions that declare fewer parameters than CouchDB passes get the first ones they declare
// (service/worker/accepted_arguments.h): validate_doc_update, filters, shows, updates and lists
// over a real cnp-worker. Each function in tests/functions/worker_fewer_params.py says what it
// was given.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/worker_process.h"

namespace cnp::worker::testing {
namespace {

using cnp::v1::DesignFunctionResponse;
using cnp::v1::ValidateResponse;
using ::testing::HasSubstr;

const char kNew[] = R"({"_id":"new-1"})";
const char kOld[] = R"({"_id":"old-1"})";
const char kUser[] = R"({"db":"d","name":"daniel","roles":[]})";
const char kSec[] = R"({"admins":{"names":["root"]}})";
const char kReq[] = R"({"method":"POST","query":{"x":"1","limit":"3"}})";
const char kOslo[] = R"({"_id":"doc-1","town":"Oslo"})";
const char kLima[] = R"({"_id":"doc-2","town":"Lima"})";

class FewerParametersTest : public ::testing::Test {
 protected:
  void SetUp() override { worker_ = WorkerProcess::StartWithFunctions(); }

  ValidateResponse Validate(const std::string& function, const std::string& new_doc = kNew) {
    Task task;
    auto* v = task.mutable_validate();
    v->set_function("worker_fewer_params." + function);
    v->set_new_doc(new_doc);
    v->set_old_doc(kOld);
    v->set_user_ctx(kUser);
    v->set_sec_obj(kSec);
    Reply reply = worker_->Call(task);
    EXPECT_TRUE(reply.has_validate()) << reply.DebugString();
    return reply.validate();
  }

  DesignFunctionResponse Run(cnp::v1::DesignFunctionKind kind, const std::string& function,
                             const std::string& args) {
    Reply reply = worker_->Call(DesignTask(kind, "worker_fewer_params." + function, args));
    EXPECT_TRUE(reply.has_design()) << reply.DebugString();
    return reply.design();
  }

  std::unique_ptr<WorkerProcess> worker_;
};

TEST_F(FewerParametersTest, ValidateGetsTheFirstArgumentsItDeclares) {
  ValidateResponse three = Validate("validate_three");
  EXPECT_EQ(three.outcome(), ValidateResponse::FORBIDDEN) << three.DebugString();
  EXPECT_EQ(three.message(), "three: new=new-1 old={'_id': 'old-1'} user=daniel");

  ValidateResponse two = Validate("validate_two");
  EXPECT_EQ(two.outcome(), ValidateResponse::UNAUTHORIZED) << two.DebugString();
  EXPECT_EQ(two.message(), "two: new=new-1 old=old-1");

  EXPECT_EQ(Validate("validate_one", kOslo).outcome(), ValidateResponse::OK);
  ValidateResponse one = Validate("validate_one");
  EXPECT_EQ(one.outcome(), ValidateResponse::FORBIDDEN) << one.DebugString();
  EXPECT_EQ(one.message(), "one: new-1 has no town");
}

// Parameters with defaults are given CouchDB's arguments; keyword-only ones never are.
TEST_F(FewerParametersTest, DefaultsCountAndKeywordOnlyParametersAreLeftAlone) {
  ValidateResponse response = Validate("validate_with_defaults");
  EXPECT_EQ(response.outcome(), ValidateResponse::FORBIDDEN) << response.DebugString();
  EXPECT_EQ(response.message(),
            "defaults: user=daniel secobj={'admins': {'names': ['root']}} strict=unset");
}

TEST_F(FewerParametersTest, StarArgsAndAWrapperGetEverything) {
  ValidateResponse star = Validate("validate_star");
  EXPECT_EQ(star.message(), "star: 4 arguments, secobj={'admins': {'names': ['root']}}");
  // inspect.signature() would follow functools.wraps's __wrapped__ to (count, new): the
  // wrapper, which is what runs, takes *args.
  ValidateResponse wrapped = Validate("validate_wrapped");
  EXPECT_EQ(wrapped.message(), "wrapped: the wrapper got 4 arguments, new=new-1");
}

TEST_F(FewerParametersTest, NoParametersAtAllIsPythonsTypeError) {
  ValidateResponse response = Validate("validate_none");
  EXPECT_EQ(response.outcome(), ValidateResponse::ERROR);
  EXPECT_EQ(response.error().type(), "TypeError");
  EXPECT_THAT(response.message(), HasSubstr("takes 0 positional arguments but 4 were given"));

  DesignFunctionResponse show =
      Run(cnp::v1::SHOW, "show_none", std::string("[") + kOslo + "," + kReq + "]");
  EXPECT_EQ(show.error().type(), "TypeError") << show.DebugString();
  EXPECT_THAT(show.reply(), HasSubstr("takes 0 positional arguments but 2 were given"));
}

TEST_F(FewerParametersTest, FilterWithTheDocumentOnly) {
  const std::string docs = std::string("[") + kOslo + "," + kLima + "]";
  EXPECT_EQ(Run(cnp::v1::FILTER, "filter_doc", "[" + docs + "," + kReq + "]").reply(),
            "[true,[true,false]]");
  EXPECT_EQ(Run(cnp::v1::FILTER, "filter_keyword_req", "[" + docs + "," + kReq + "]").reply(),
            "[true,[false,true]]");
}

TEST_F(FewerParametersTest, ShowAndUpdateWithTheDocumentOnly) {
  const std::string args = std::string("[") + kOslo + "," + kReq + "]";
  EXPECT_EQ(Run(cnp::v1::SHOW, "show_doc|3", args).reply(), R"(["resp",{"body":"show of doc-1"}])");
  EXPECT_EQ(Run(cnp::v1::SHOW, "show_doc|3", std::string("[null,") + kReq + "]").reply(),
            R"(["resp",{"body":"show of None"}])");
  EXPECT_EQ(Run(cnp::v1::SHOW, "show_star", args).reply(),
            R"(["resp",{"body":"2 arguments, query x=1"}])");
  EXPECT_EQ(Run(cnp::v1::SHOW, "show_wrapped", args).reply(),
            R"(["resp",{"body":"the wrapper got 2 arguments for doc-1"}])");
  EXPECT_EQ(Run(cnp::v1::UPDATE, "update_doc", args).reply(),
            R"(["up",{"_id":"doc-1","town":"Oslo","seen":true},{"body":"updated without req"}])");
}

TEST_F(FewerParametersTest, WholeListWithTheHeadOnly) {
  const std::string args = std::string(R"([{"total_rows":2,"offset":0},)") + kReq +
                           R"(,[{"id":"a","key":1},{"id":"b","key":2}]])";
  EXPECT_EQ(Run(cnp::v1::LIST, "list_head", args).reply(),
            R"(["end",["total_rows=2\n","a\n","b\n","END\n"],{"headers":{"Content-Type":"text/plain"}}])");
  // A generator list that declares no rows parameter asks for them with get_row().
  EXPECT_EQ(Run(cnp::v1::LIST, "generator_head_req", args).reply(),
            R"(["end",["limit=3\n","a\n","b\n"],{"headers":{}}])");
}

TEST_F(FewerParametersTest, InteractiveListWithTheHeadOnly) {
  Task start;
  start.mutable_list_start()->set_function("worker_fewer_params.list_head");
  start.mutable_list_start()->set_head(R"({"total_rows":20,"offset":0})");
  start.mutable_list_start()->set_req(kReq);
  Reply reply = worker_->Call(start);
  ASSERT_TRUE(reply.has_list_step()) << reply.DebugString();
  EXPECT_EQ(reply.list_step().reply(),
            R"(["start",["total_rows=20\n"],{"headers":{"Content-Type":"text/plain"}}])");
  Task row;
  row.mutable_list_row()->set_row(R"({"id":"a"})");
  EXPECT_EQ(worker_->Call(row).list_step().reply(), R"(["chunks",["a\n"]])");
  Task end;
  end.mutable_list_row();
  reply = worker_->Call(end);
  EXPECT_TRUE(reply.list_step().done());
  EXPECT_EQ(reply.list_step().reply(), R"(["end",["END\n"]])");
}

}  // namespace
}  // namespace cnp::worker::testing
