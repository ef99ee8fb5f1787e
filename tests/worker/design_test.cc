// Filters, view filters, shows, updates, rewrites and whole lists over a real cnp-worker.
#include "gmock/gmock.h"
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

// couchjs's filter.js does not catch: its main loop answers an exception with its name,
// ["error", e.name, e], and no log line.
TEST_F(DesignTest, RaisingFilterIsAnErrorNamedByTheExceptionNamingTheDocument) {
  std::string args = std::string("[[{\"_id\":\"x\"}],") + kReq + "]";
  DesignFunctionResponse response = Run(cnp::v1::FILTER, "worker_design.filter_crashes", args);
  // The message names where in the operator's code it was raised.
  const std::string where = RaisedAt("worker_design.py", "doc[\"town\"] == \"x\"", "filter_crashes");
  EXPECT_EQ(response.reply(), R"(["error","KeyError","'town')" + where + R"("])");
  EXPECT_EQ(response.error().message(), "'town'" + where);
  EXPECT_EQ(response.logs_size(), 0);
  EXPECT_EQ(response.error().doc_id(), "x");
  EXPECT_EQ(response.error().type(), "KeyError");
}

// A filter with a yield in it (or written async def) returned a generator (a coroutine)
// without running its body; the object is truthy, so every document went through: a leak in
// _changes?filter= and filtered replication. It is an error saying why, as for
// validate_doc_update.
TEST_F(DesignTest, AFilterThatYieldsOrIsAsyncIsAnErrorNotAPass) {
  const std::string args =
      R"([[{"_id":"mine","owner":"bob"},{"_id":"secret","owner":"alice"}],)"
      R"({"query":{},"userCtx":{"db":"db","name":"bob","roles":[]}}])";
  DesignFunctionResponse yields = Run(cnp::v1::FILTER, "worker_design.filter_yields", args);
  EXPECT_THAT(yields.reply(), ::testing::StartsWith(R"(["error","TypeError",)"));
  EXPECT_THAT(yields.reply(),
              ::testing::HasSubstr("worker_design.filter_yields returned a generator without "
                                   "running its body, so it filtered nothing"));
  EXPECT_EQ(yields.error().type(), "TypeError");
  EXPECT_EQ(yields.error().doc_id(), "mine");
  DesignFunctionResponse async = Run(cnp::v1::FILTER, "worker_design.filter_async", args);
  EXPECT_THAT(async.reply(),
              ::testing::HasSubstr("worker_design.filter_async returned a coroutine without "
                                   "running its body, so it filtered nothing"));
}

// The other kinds whose result is used as a value say the same, rather than failing later on
// the object (a list's async tail was sent as "<coroutine object ...>").
TEST_F(DesignTest, OtherKindsSayTheirBodyDidNotRun) {
  const std::string show_args = std::string("[") + kOslo + "," + kReq + "]";
  const std::string post_args = std::string("[") + kOslo + R"(,{"method":"POST"}])";
  const std::string list_args = std::string("[") + R"({"total_rows":0,"offset":0},{},[]])";
  const struct {
    cnp::v1::DesignFunctionKind kind;
    std::string function;
    std::string args;
    std::string says;
  } cases[] = {
      {cnp::v1::SHOW, "worker_design.show_async", show_args,
       "worker_design.show_async returned a coroutine without running its body, so it "
       "rendered nothing"},
      {cnp::v1::UPDATE, "worker_design.update_async", post_args,
       "worker_design.update_async returned a coroutine without running its body, so it "
       "updated nothing"},
      {cnp::v1::REWRITE, "worker_design.rewrite_yields", R"([{"path":["db"]}])",
       "worker_design.rewrite_yields returned a generator without running its body, so it "
       "rewrote nothing"},
      {cnp::v1::LIST, "worker_design.list_async", list_args,
       "worker_design.list_async returned a coroutine without running its body, so it "
       "listed nothing"},
  };
  for (const auto& c : cases) {
    DesignFunctionResponse response = Run(c.kind, c.function, c.args);
    EXPECT_THAT(response.reply(), ::testing::StartsWith(R"(["error","render_error","TypeError: )"))
        << c.function;
    EXPECT_THAT(response.reply(), ::testing::HasSubstr(c.says)) << c.function;
  }
}

TEST_F(DesignTest, ViewFilterIsTrueWhenTheMapFunctionEmits) {
  std::string args = std::string("[[") + kOslo + R"(,{"_id":"doc-3","town":"Lima","n":3}]])";
  DesignFunctionResponse response = Run(cnp::v1::VIEW_FILTER, "worker_views.town_emit", args);
  EXPECT_EQ(response.reply(), "[true,[true,true]]");
  EXPECT_EQ(Run(cnp::v1::VIEW_FILTER, "worker_views.oslo_only", std::string("[[") + kOslo + "," +
                                                                    kLima + "]]")
                .reply(),
            "[true,[true,false]]");
}

// In couchjs's filter_view emit() only sets a flag: a value JSON cannot carry is never
// serialised, so the document counts as emitted instead of failing the _changes request.
TEST_F(DesignTest, AViewFilterCountsARowJsonCannotCarry) {
  const std::string args = std::string("[[") + kOslo + "]]";
  EXPECT_EQ(Run(cnp::v1::VIEW_FILTER, "worker_views.emits_a_set_value", args).reply(),
            "[true,[true]]");
  EXPECT_EQ(Run(cnp::v1::VIEW_FILTER, "worker_views.emits_a_set", args).reply(), "[true,[true]]");
}

// A map function that raises in a view filter (_changes?filter=_view) is an error for the
// whole call, as with couchjs's filter_view (no try/catch there): CouchDB answers the _changes
// request with 500 rather than leaving the document out of the feed.
TEST_F(DesignTest, RaisingMapFunctionInAViewFilterIsAnErrorNotADroppedDocument) {
  std::string args = std::string("[[") + kOslo + R"(,{"_id":"no-town"}]])";
  DesignFunctionResponse response = Run(cnp::v1::VIEW_FILTER, "worker_views.town_emit", args);
  EXPECT_EQ(response.reply(),
            R"(["error","KeyError","'town')" +
                RaisedAt("worker_views.py", "emit(doc[\"town\"], doc[\"n\"])", "town_emit") +
                R"("])");
  EXPECT_EQ(response.logs_size(), 0);
  EXPECT_EQ(response.error().type(), "KeyError");
  EXPECT_EQ(response.error().doc_id(), "no-town");
}

// Forbidden and Unauthorized are couchjs's thrown {forbidden: msg} / {unauthorized: msg}:
// HTTP 403 / 401 from any design function, not a 500 render_error, and not a function error.
TEST_F(DesignTest, ForbiddenAndUnauthorizedAreCouchDbsErrorsInEveryKind) {
  const std::string show_args = std::string("[") + kOslo + "," + kReq + "]";
  DesignFunctionResponse show = Run(cnp::v1::SHOW, "worker_design.show_forbidden", show_args);
  EXPECT_EQ(show.reply(), R"(["error","forbidden","members only"])");
  EXPECT_FALSE(show.has_error());
  EXPECT_EQ(show.logs_size(), 0);
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.show_unauthorized", show_args).reply(),
            R"(["error","unauthorized","log in first"])");
  EXPECT_EQ(Run(cnp::v1::UPDATE, "worker_design.update_forbidden",
                std::string("[") + kOslo + R"(,{"method":"POST"}])")
                .reply(),
            R"(["error","forbidden","no updates here"])");
  EXPECT_EQ(Run(cnp::v1::FILTER, "worker_design.filter_forbidden",
                std::string("[[") + kOslo + "]," + kReq + "]")
                .reply(),
            R"(["error","forbidden","no changes for you"])");
  EXPECT_EQ(Run(cnp::v1::REWRITE, "worker_design.rewrite_forbidden", R"([{"path":["db"]}])").reply(),
            R"(["error","forbidden","no way through"])");
  EXPECT_EQ(Run(cnp::v1::LIST, "worker_design.list_forbidden",
                std::string(R"([{"total_rows":1},{},[{"id":"a"}]])"))
                .reply(),
            R"(["error","unauthorized","log in to list"])");
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
  EXPECT_EQ(crash.reply(), R"(["error","render_error","KeyError: 'nope')" +
                               RaisedAt("worker_design.py", "return doc[\"nope\"]", "show_crashes") +
                               R"("])");
  EXPECT_EQ(crash.error().function(), "worker_design.show_crashes");
  EXPECT_EQ(crash.error().doc_id(), "doc-1");
}

// couch-named-python merged what start() was given into a show's answer, its code and headers
// over the returned ones, with or without send() (couchjs keeps start() only with send(), and
// then copies its keys into the headers; old modules must run unchanged).
TEST_F(DesignTest, AShowsStartIsMergedIntoItsAnswer) {
  const std::string args = std::string("[null,") + kReq + "]";
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.start_then_return", args).reply(),
            R"(["resp",{"body":"not here","code":404,"headers":{"Content-Type":"text/plain"}}])");
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.start_send_and_return", args).reply(),
            R"(["resp",{"body":"abc","headers":{"X-Ret":"2","X-Both":"start","X-Start":"1"},)"
            R"("code":201}])");
  // A redirect is answered as itself: what start() and send() were given is dropped.
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.start_then_redirect", args).reply(),
            R"(["resp",{"code":302,"headers":{"Location":"/elsewhere"}}])");
}

// Found by a review: an exception whose repr() raised SystemExit escaped the log line of a
// render_error, and the show failed as the worker's INTERNAL error instead of the function's.
TEST_F(DesignTest, AnExceptionWhoseReprRaisesIsStillARenderError) {
  std::string args = std::string("[") + kOslo + "," + kReq + "]";
  DesignFunctionResponse crash = Run(cnp::v1::SHOW, "worker_design.show_raises_repr_exits", args);
  EXPECT_THAT(crash.reply(),
              ::testing::StartsWith(R"(["error","render_error","_ReprExits: no repr)"));
  EXPECT_EQ(crash.error().function(), "worker_design.show_raises_repr_exits");
  ASSERT_EQ(crash.logs_size(), 1);
  EXPECT_EQ(crash.logs(0).rfind("function raised error: _ReprExits \nstacktrace: ", 0), 0u)
      << crash.logs(0);
}

// render.js renderError: the error is logged (exception and stack) before the render_error.
TEST_F(DesignTest, RenderErrorIsLoggedWithItsTracebackFirst) {
  std::string args = std::string("[") + kOslo + "," + kReq + "]";
  DesignFunctionResponse crash = Run(cnp::v1::SHOW, "worker_design.show_crashes", args);
  EXPECT_EQ(crash.reply(), R"(["error","render_error","KeyError: 'nope')" +
                               RaisedAt("worker_design.py", "return doc[\"nope\"]", "show_crashes") +
                               R"("])");
  ASSERT_EQ(crash.logs_size(), 1);
  const std::string& log = crash.logs(0);
  EXPECT_EQ(log.rfind("function raised error: KeyError('nope') \nstacktrace: ", 0), 0u) << log;
  // The user's frame, and none of couch_named_python's own.
  EXPECT_NE(log.find("worker_design.py\", line "), std::string::npos) << log;
  EXPECT_NE(log.find("in show_crashes"), std::string::npos) << log;
  EXPECT_EQ(log.find("_runtime.py"), std::string::npos) << log;

  DesignFunctionResponse update = Run(cnp::v1::UPDATE, "worker_design.bump",
                                      R"([{"_id":"a","n":"x"},{"method":"POST"}])");
  EXPECT_EQ(update.reply(),
            R"(["error","render_error","TypeError: can only concatenate str (not \"int\") to str)" +
                RaisedAt("worker_design.py", "doc.get(\"n\", 0) + 1", "bump") + R"("])");
  ASSERT_EQ(update.logs_size(), 1);
  EXPECT_EQ(update.logs(0).rfind("function raised error: TypeError(", 0), 0u) << update.logs(0);
}

// A response that is not JSON is the function's error, told as a raised one is: a log line
// first, then render_error, and the service's log gets it too.
TEST_F(DesignTest, AResponseThatIsNotJsonIsLoggedAsARenderError) {
  struct Case {
    cnp::v1::DesignFunctionKind kind;
    std::string function;
    std::string args;
    std::string log_kind;
  };
  for (const Case& c : std::vector<Case>{
           {cnp::v1::SHOW, "worker_design.show_not_json", std::string("[") + kOslo + "," + kReq + "]",
            "show"},
           {cnp::v1::UPDATE, "worker_design.update_not_json",
            std::string("[") + kOslo + R"(,{"method":"POST"}])", "update"},
           {cnp::v1::REWRITE, "worker_design.rewrite_not_json", R"([{"path":["db"]}])", "rewrite"},
       }) {
    Reply reply = worker_->Call(DesignTask(c.kind, c.function, c.args));
    ASSERT_TRUE(reply.has_design()) << reply.DebugString();
    const DesignFunctionResponse& response = reply.design();
    EXPECT_EQ(response.reply(),
              R"(["error","render_error","TypeError: Object of type set is not JSON serializable"])")
        << c.function;
    ASSERT_EQ(response.logs_size(), 1) << c.function;
    EXPECT_EQ(response.logs(0),
              "function returned a response that is not JSON: TypeError: Object of type set is "
              "not JSON serializable");
    EXPECT_EQ(response.error().type(), "TypeError");
    bool logged = false;
    for (const v1::FunctionLog& line : reply.function_logs()) {
      if (line.error().empty()) continue;
      logged = true;
      EXPECT_EQ(line.error(), "TypeError");
      EXPECT_EQ(line.function(), c.function);
      EXPECT_EQ(line.kind(), c.log_kind);
      EXPECT_NE(line.message().find("not JSON serializable"), std::string::npos) << line.message();
    }
    EXPECT_TRUE(logged) << c.function;
  }
}

// render.js runShow: a show that raises when CouchDB found no document for the id in the path
// answers 404 "document not found", not a 500.
TEST_F(DesignTest, ShowRaisingOnAMissingDocumentIsNotFound) {
  const char missing_req[] =
      R"({"method":"GET","query":{},"path":["db","_design","r","_show","needs_doc","missing"]})";
  DesignFunctionResponse response =
      Run(cnp::v1::SHOW, "worker_design.needs_doc", std::string("[null,") + missing_req + "]");
  EXPECT_EQ(response.reply(), R"(["error","not_found","document not found"])");
  EXPECT_EQ(response.logs_size(), 0);
  // Whatever it raised (couchjs replaces a thrown error too).
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.show_forbidden",
                std::string("[null,") + missing_req + "]")
                .reply(),
            R"(["error","not_found","document not found"])");
  // With no document id in the path (…/_show/needs_doc), it is the function's error.
  const char no_id_req[] = R"({"method":"GET","query":{},"path":["db","_design","r","_show","needs_doc"]})";
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.needs_doc", std::string("[null,") + no_id_req + "]")
                .reply(),
            R"(["error","render_error","TypeError: 'NoneType' object is not subscriptable)" +
                RaisedAt("worker_design.py", "return {\"body\": doc[\"town\"]}", "needs_doc") +
                R"("])");
}

TEST_F(DesignTest, ALoneSurrogateInAResponseIsAnEscapeNotARenderError) {
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.surrogate_body", std::string("[null,") + kReq + "]")
                .reply(),
            R"(["resp",{"body":"half a pair: \udc80"}])");
}

TEST_F(DesignTest, SysExitInAShowIsARenderErrorAndTheWorkerCarriesOn) {
  std::string args = std::string("[") + kOslo + "," + kReq + "]";
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.exits", args).reply(),
            R"(["error","render_error","SystemExit: 3)" +
                RaisedAt("worker_design.py", "raise SystemExit(3)", "exits") + R"("])");
  EXPECT_EQ(Run(cnp::v1::SHOW, "worker_design.plain_string", args).reply(),
            R"(["resp",{"body":"just a string for doc-1"}])");
}

// Found by a review: an exception whose str() raises, or one that is a BaseException but no
// Exception, made the show's own error handling fail, and the answer was the worker's
// internal_error, not the function's render_error (nor counted as the function's error).
TEST_F(DesignTest, AnUnprintableOrBaseExceptionInAShowIsARenderError) {
  std::string args = std::string("[") + kOslo + "," + kReq + "]";
  DesignFunctionResponse unprintable = Run(cnp::v1::SHOW, "worker_design.show_unprintable", args);
  EXPECT_EQ(unprintable.reply(), R"(["error","render_error","_Unprintable: <exception str() failed>)" +
                                     RaisedAt("worker_design.py", "raise _Unprintable()", "show_unprintable") +
                                     R"("])");
  EXPECT_EQ(unprintable.error().function(), "worker_design.show_unprintable");
  DesignFunctionResponse base = Run(cnp::v1::SHOW, "worker_design.show_base_exception", args);
  EXPECT_EQ(base.reply(), R"(["error","render_error","_NotAnException: beyond Exception)" +
                              RaisedAt("worker_design.py", "raise _NotAnException(\"beyond Exception\")",
                                       "show_base_exception") +
                              R"("])");
  EXPECT_EQ(base.error().type(), "_NotAnException");
  // The worker goes on.
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

TEST_F(DesignTest, AnUpdateResponseThatIsNeitherADictNorAStrIsARenderError) {
  const char post[] = R"({"method":"POST","query":{}})";
  EXPECT_THAT(
      Run(cnp::v1::UPDATE, "worker_design.answers_a_number", std::string("[null,") + post + "]")
          .reply(),
      ::testing::StartsWith(R"(["error","render_error","TypeError: an update function must )"
                            R"(return a dict or a str, not int)"));
}

TEST_F(DesignTest, RewriteAnswersOkOrNoDispatchRule) {
  EXPECT_EQ(Run(cnp::v1::REWRITE, "worker_design.rewrite", R"([{"path":["db","x"],"query":{"a":"b"}}])").reply(),
            R"(["ok",{"path":"/db/_design/x/_view/v","query":{"a":"b"}}])");
  EXPECT_EQ(Run(cnp::v1::REWRITE, "worker_design.rewrite", R"([{"path":["db","none"],"query":{}}])").reply(),
            R"(["no_dispatch_rule"])");
}

// couchjs answers a rewrite function's string as the path to rewrite to (CouchDB's own
// rewrite_js tests return 'foo.txt'), and a false result as no rule.
TEST_F(DesignTest, ARewritesStringIsItsPath) {
  EXPECT_EQ(Run(cnp::v1::REWRITE, "worker_design.rewrite_to_a_string", R"([{"path":["db"]}])").reply(),
            R"(["ok",{"path":"some/path"}])");
  EXPECT_EQ(Run(cnp::v1::REWRITE, "worker_design.rewrite_false", R"([{"path":["db"]}])").reply(),
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

// couch-named-python answered a list's Redirect with start({"code": 302, "headers":
// {"Location": url}}), the chunks sent before it going with it.
TEST_F(DesignTest, AWholeListsRedirectIsItsStart) {
  std::string args = std::string("[") + kHead + "," + kReq + "," + kRows + "]";
  EXPECT_EQ(Run(cnp::v1::LIST, "worker_design.list_redirects", args).reply(),
            R"(["end",["before"],{"code":302,"headers":{"Location":"/z"}}])");
}

TEST_F(DesignTest, BadArgumentsAreBadInput) {
  Reply reply = worker_->Call(DesignTask(cnp::v1::LIST, "worker_design.rows", "[{}]"));
  ASSERT_TRUE(reply.has_failure());
  EXPECT_EQ(reply.failure().code(), v1::Failure::BAD_INPUT);
  EXPECT_EQ(reply.failure().message(), "args has 1 elements; this kind takes 3");
}

// Documents, requests, heads and rows are JSON objects, as CouchDB passes them (a show's or an
// update's document may be null): a design function is any callable on the path, and a
// security probe ran a shell command by handing a text loader bundled in an allowed package
// text as a show's document. Anything else reaches no function.
TEST_F(DesignTest, ArgumentsThatAreNotObjectsReachNoFunction) {
  const std::string req = kReq;
  const struct {
    cnp::v1::DesignFunctionKind kind;
    const char* function;
    std::string args;
    const char* refusal;
  } cases[] = {
      {cnp::v1::SHOW, "worker_design.hello", R"(["!!python/object", )" + req + "]",
       "args[0] must be a JSON object or null, not a string"},
      {cnp::v1::UPDATE, "worker_design.bump", "[[1], " + req + "]",
       "args[0] must be a JSON object or null, not an array"},
      {cnp::v1::SHOW, "worker_design.hello", std::string("[") + kOslo + ", \"req\"]",
       "args[1] must be a JSON object, not a string"},
      {cnp::v1::REWRITE, "worker_design.rewrite", "[7]",
       "args[0] must be a JSON object, not a number"},
      {cnp::v1::FILTER, "worker_design.by_town", std::string("[[") + kOslo + ", \"x\"], " + req + "]",
       "args[0][1] must be a JSON object, not a string"},
      {cnp::v1::VIEW_FILTER, "worker_views.town", "[[true]]",
       "args[0][0] must be a JSON object, not a boolean"},
      {cnp::v1::LIST, "worker_design.rows", "[null, " + req + ", []]",
       "args[0] must be a JSON object, not null"},
  };
  for (const auto& c : cases) {
    Reply reply = worker_->Call(DesignTask(c.kind, c.function, c.args));
    ASSERT_TRUE(reply.has_failure()) << c.args << ": " << reply.DebugString();
    EXPECT_EQ(reply.failure().code(), v1::Failure::BAD_INPUT) << c.args;
    EXPECT_EQ(reply.failure().message(), c.refusal) << c.args;
  }
  // What CouchDB sends still runs: a show of no document.
  EXPECT_THAT(Run(cnp::v1::SHOW, "worker_design.hello", "[null, " + req + "]").reply(),
              ::testing::StartsWith(R"(["resp")"));
}

}  // namespace
}  // namespace cnp::worker::testing
