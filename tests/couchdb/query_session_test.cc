// QuerySession against a scripted TaskRunner: the CouchDB reply shapes, which failures end the
// session, and that infrastructure failures never become empty results.
#include "service/couchdb/query_session.h"

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/utf8_text.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "service/couchdb/query_protocol.h"
#include "tests/couchdb/session_lines.h"

namespace cnp::couchdb {
namespace {

using session_testing::LinesOf;

using pool::Reply;
using pool::Task;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

Reply ReplyFromText(const std::string& text) {
  Reply reply;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &reply)) << text;
  return reply;
}

// Runs tasks through `on_run` (and list steps through `on_exchange`), recording what it saw.
class ScriptedRunner : public pool::TaskRunner {
 public:
  std::function<absl::StatusOr<Reply>(const Task&)> on_run;
  std::function<absl::StatusOr<Reply>(const Task&)> on_exchange;
  std::vector<Task> tasks;
  std::vector<absl::Time> deadlines;
  int leases_released = 0;

  absl::StatusOr<Reply> Run(const Task& task, absl::Time deadline) override {
    tasks.push_back(task);
    deadlines.push_back(deadline);
    if (!on_run) return absl::InternalError("the test did not expect a task");
    return on_run(task);
  }

  absl::StatusOr<std::unique_ptr<pool::WorkerLease>> Lease(absl::Time) override {
    return std::make_unique<ScriptedLease>(*this);
  }

 private:
  class ScriptedLease : public pool::WorkerLease {
   public:
    explicit ScriptedLease(ScriptedRunner& runner) : runner_(runner) {}
    ~ScriptedLease() override { ++runner_.leases_released; }
    absl::StatusOr<Reply> Exchange(const Task& task, absl::Time) override {
      runner_.tasks.push_back(task);
      return runner_.on_exchange(task);
    }

   private:
    ScriptedRunner& runner_;
  };
};

bool Exits(const std::optional<v1::SessionOutput>& output) {
  return output.has_value() && output->exit();
}

constexpr char kResolved[] = R"pb(resolve { functions { function: "f" } })pb";

class QuerySessionTest : public ::testing::Test {
 protected:
  std::vector<std::string> Send(std::string_view line) { return LinesOf(session_.Handle(line)); }

  void AddFun(std::string_view name) {
    runner_.on_run = [](const Task&) { return ReplyFromText(kResolved); };
    ASSERT_THAT(Send(absl::StrCat("[\"add_fun\",\"", std::string(name), "\"]")),
                ElementsAre("true"));
  }

  ScriptedRunner runner_;
  QuerySession session_{runner_};
};

TEST_F(QuerySessionTest, ResetIsNotAnsweredButApplied) {
  AddFun("fns.by_town|1");
  EXPECT_FALSE(session_.Handle(R"(["reset",{"reduce_limit":true,"timeout":5000}])").has_value());
  runner_.tasks.clear();
  // The map functions are gone: couchjs answers an empty list without running anything.
  EXPECT_THAT(Send(R"(["map_doc",{"_id":"a"}])"), ElementsAre("[]"));
  EXPECT_TRUE(runner_.tasks.empty());
}

TEST_F(QuerySessionTest, ResetKeepsDesignDocs) {
  EXPECT_THAT(
      Send(R"(["ddoc","new","_design/v",{"_id":"_design/v","validate_doc_update":"fns.vdu|2"}])"),
      ElementsAre("true"));
  session_.Handle(R"(["reset",{"reduce_limit":true,"timeout":5000}])");
  runner_.on_run = [](const Task&) { return ReplyFromText(R"pb(validate { outcome: OK })pb"); };
  EXPECT_THAT(
      Send(R"(["ddoc","_design/v",["validate_doc_update"],[{"_id":"x"},null,{"name":"bob"},{}]])"),
      ElementsAre("1"));
  ASSERT_EQ(runner_.tasks.size(), 1u);
  EXPECT_EQ(runner_.tasks[0].validate().function(), "fns.vdu|2");
  EXPECT_EQ(runner_.tasks[0].validate().new_doc(), R"({"_id":"x"})");
  EXPECT_EQ(runner_.tasks[0].validate().old_doc(), "null");
  EXPECT_EQ(runner_.tasks[0].validate().user_ctx(), R"({"name":"bob"})");
  EXPECT_EQ(runner_.tasks[0].validate().sec_obj(), "{}");
}

TEST_F(QuerySessionTest, DesignFunctionsCalledWithoutArgumentsAreMissingArguments) {
  EXPECT_THAT(Send(R"(["ddoc","new","_design/d",{"_id":"_design/d",)"
                   R"("validate_doc_update":"fns.vdu|2","lists":{"rows":"fns.rows|1"}}])"),
              ElementsAre("true"));
  EXPECT_THAT(
      Send(R"(["ddoc","_design/d",["validate_doc_update"],[]])"),
      ElementsAre(
          R"(["error","query_protocol_error","'validate_doc_update' is missing arguments"])"));
  EXPECT_THAT(Send(R"(["ddoc","_design/d",["lists","rows"],[]])"),
              ElementsAre(R"(["error","query_protocol_error","'lists' is missing arguments"])"));
  EXPECT_TRUE(runner_.tasks.empty());
  // The session goes on.
  runner_.on_run = [](const Task&) { return ReplyFromText(R"pb(validate { outcome: OK })pb"); };
  EXPECT_THAT(Send(R"(["ddoc","_design/d",["validate_doc_update"],[{"_id":"x"},null,{},{}]])"),
              ElementsAre("1"));
}

TEST_F(QuerySessionTest, AddFunResolvesAtOnce) {
  runner_.on_run = [](const Task& task) {
    EXPECT_THAT(task.resolve().functions(), ElementsAre("fns.missing|3"));
    return ReplyFromText(
        R"pb(resolve {
               functions { function: "fns.missing|3" error: "ImportError: No module named fns" }
             })pb");
  };
  EXPECT_THAT(Send(R"(["add_fun","fns.missing|3"])"),
              ElementsAre(R"(["error","compilation_error","ImportError: No module named fns"])"));
}

TEST_F(QuerySessionTest, AddFunChecksVersionsAsMapDocWillLoadThem) {
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(resolve { functions { function: "fns.f" versioned_name: "fns.f" } })pb");
  };
  EXPECT_THAT(Send(R"(["add_fun","fns.f"])"), ElementsAre("true"));
  ASSERT_EQ(runner_.tasks.size(), 1u);
  EXPECT_TRUE(runner_.tasks[0].versions_as_run()) << runner_.tasks[0].DebugString();
}

TEST_F(QuerySessionTest, AddFunKeepsTheVersionMismatchText) {
  runner_.on_run = [](const Task&) {
    return ReplyFromText(
        R"pb(failure {
               code: VERSION_MISMATCH
               message: "ValueError: Loaded version 556 did not match expected version 2"
             })pb");
  };
  EXPECT_THAT(
      Send(R"(["add_fun","fns.f|2"])"),
      ElementsAre(
          R"(["error","compilation_error","ValueError: Loaded version 556 did not match expected version 2"])"));
}

TEST_F(QuerySessionTest, MapDocForwardsTheDocumentBytesUntouched) {
  AddFun("fns.a|1");
  AddFun("fns.b");
  const std::string doc = R"({"_id":"d1", "n":1.50,"u":"\u00e9\n"})";
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(map { results { rows: "[[[\"k\",1]],[]]" } })pb");
  };
  EXPECT_THAT(Send(absl::StrCat("[\"map_doc\",", doc, "]")), ElementsAre(R"([[["k",1]],[]])"));
  const Task& task = runner_.tasks.back();
  EXPECT_THAT(task.map().functions(), ElementsAre("fns.a|1", "fns.b"));
  EXPECT_THAT(task.map().docs(), ElementsAre(doc));
}

TEST_F(QuerySessionTest, MapExceptionIsALogLineAndTheRowsGoOn) {
  AddFun("fns.a");
  runner_.on_run = [](const Task&) {
    return ReplyFromText(
        R"pb(map {
               results {
                 rows: "[[]]"
                 logs: "mapping doc-7"
                 errors {
                   function: "fns.a"
                   doc_id: "doc-7"
                   type: "KeyError"
                   message: "'nope'"
                   logs_before: 1
                 }
               }
             })pb");
  };
  EXPECT_THAT(
      Send(R"(["map_doc",{"_id":"doc-7"}])"),
      ElementsAre(R"(["log","mapping doc-7"])",
                  R"(["log","function raised exception (KeyError: 'nope') with doc._id doc-7"])",
                  "[[]]"));
}

// couchjs prints a missing _id as JavaScript prints it (CouchDB always sends one; a test of the
// query server may not).
TEST_F(QuerySessionTest, MapExceptionOnADocumentWithoutIdSaysUndefined) {
  AddFun("fns.a");
  runner_.on_run = [](const Task&) {
    return ReplyFromText(
        R"pb(map {
               results {
                 rows: "[[]]"
                 errors { function: "fns.a" type: "KeyError" message: "'x'" }
               }
             })pb");
  };
  EXPECT_THAT(Send(R"(["map_doc",{"n":1}])"),
              ElementsAre(R"(["log","function raised exception (KeyError: 'x') with doc._id undefined"])",
                          "[[]]"));
}

// couchjs runs the functions one after the other, each writing its log lines and then, if it
// raised, its exception line: the lines come in that order, not all logs first.
TEST_F(QuerySessionTest, MapLogAndExceptionLinesComeFunctionByFunction) {
  AddFun("fns.a");
  AddFun("fns.b");
  AddFun("fns.c");
  runner_.on_run = [](const Task&) {
    return ReplyFromText(
        R"pb(map {
               results {
                 rows: "[[],[[1,null]],[]]"
                 logs: "a says"
                 logs: "b says"
                 logs: "b again"
                 errors { function: "fns.a" doc_id: "d" type: "KeyError" message: "'x'" logs_before: 1 }
                 errors { function: "fns.c" doc_id: "d" type: "ValueError" message: "v" logs_before: 3 }
               }
             })pb");
  };
  EXPECT_THAT(Send(R"(["map_doc",{"_id":"d"}])"),
              ElementsAre(R"(["log","a says"])",
                          R"(["log","function raised exception (KeyError: 'x') with doc._id d"])",
                          R"(["log","b says"])", R"(["log","b again"])",
                          R"(["log","function raised exception (ValueError: v) with doc._id d"])",
                          "[[],[[1,null]],[]]"));
}

TEST_F(QuerySessionTest, InfrastructureFailuresAreErrorsNeverEmptyResults) {
  AddFun("fns.a");
  for (const absl::Status& status :
       {absl::UnavailableError("worker 3 crashed"), absl::DeadlineExceededError("no answer"),
        absl::ResourceExhaustedError("queue full")}) {
    runner_.on_run = [&](const Task&) { return status; };
    std::optional<v1::SessionOutput> out = session_.Handle(R"(["map_doc",{"_id":"a"}])");
    ASSERT_THAT(LinesOf(out), ElementsAre(StartsWith("[\"error\",")));
    EXPECT_THAT(LinesOf(out)[0], HasSubstr(std::string(status.message())));
    EXPECT_FALSE(Exits(out));
  }
  runner_.on_run = [](const Task&) { return absl::DeadlineExceededError("slow"); };
  EXPECT_THAT(Send(R"(["reduce",["fns.r"],[[[1,"a"],2]]])"),
              ElementsAre(StartsWith(R"(["error","timeout",)")));
}

TEST_F(QuerySessionTest, CallDeadlineFollowsCouchDBTimeoutLessAMargin) {
  session_.Handle(R"(["reset",{"timeout":20000}])");
  AddFun("fns.a");
  const absl::Time before = absl::Now();
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(map { results { rows: "[[]]" } })pb");
  };
  Send(R"(["map_doc",{}])");
  const absl::Duration budget = runner_.deadlines.back() - before;
  EXPECT_GT(budget, absl::Seconds(19));
  EXPECT_LT(budget, absl::Seconds(20));
}

// The server's --call-timeout caps what a reset may ask for, on every driver: a direct
// session's watchdog takes its budget from CallBudget(), the pool's calls their deadlines.
TEST(QuerySessionCapTest, AResetTimeoutAboveTheServersCallTimeoutIsCapped) {
  ScriptedRunner runner;
  QuerySession::Options options;
  options.max_call_timeout = absl::Seconds(60);
  QuerySession session(runner, options);
  session.Handle(R"(["reset",{"timeout":1e308}])");
  EXPECT_EQ(session.CallBudget(), absl::Seconds(60));
  runner.on_run = [](const Task&) { return ReplyFromText(kResolved); };
  session.Handle(R"(["add_fun","fns.a"])");
  runner.on_run = [](const Task&) {
    return ReplyFromText(R"pb(map { results { rows: "[[]]" } })pb");
  };
  const absl::Time before = absl::Now();
  session.Handle(R"(["map_doc",{}])");
  EXPECT_LT(runner.deadlines.back() - before, absl::Seconds(61));  // not InfiniteFuture()
  // CouchDB's own timeout, when smaller, still rules.
  session.Handle(R"(["reset",{"timeout":5000}])");
  EXPECT_EQ(session.CallBudget(), absl::Milliseconds(4500));
}

// Protocol review: a command that outran the server's cap was answered as if CouchDB's own
// timeout had passed, so an operator who raised os_process_timeout for slow views was not told
// that --call-timeout must be raised too. The timeout's error names the flag when the cap, not
// CouchDB's timeout, bounded the command; otherwise CouchDB's timeout. (An API probe and a
// README walkthrough found the latter told with the pool's words, "the deadline, the client's or
// --call-timeout", so that an operator raised a setting that changed nothing.)
TEST(QuerySessionCapTest, ATimeoutUnderTheServersCapNamesTheFlag) {
  ScriptedRunner runner;
  QuerySession::Options options;
  options.max_call_timeout = absl::Seconds(2);
  QuerySession session(runner, options);
  // A reset clears the map functions: each is added after it.
  auto reset_then_add = [&](const char* reset) {
    session.Handle(reset);
    runner.on_run = [](const Task&) { return ReplyFromText(kResolved); };
    session.Handle(R"(["add_fun","fns.a"])");
    runner.on_run = [](const Task&) {
      return absl::DeadlineExceededError("the map did not finish");
    };
  };

  reset_then_add(R"(["reset",{"timeout":600000}])");
  EXPECT_THAT(session.ServerCapNote(), HasSubstr("--call-timeout, 2s"));
  std::optional<v1::SessionOutput> capped = session.Handle(R"(["map_doc",{"_id":"a"}])");
  ASSERT_EQ(LinesOf(capped).size(), 1u);
  EXPECT_THAT(LinesOf(capped)[0], StartsWith(R"(["error","timeout","cnp-server: the map did not )"
                                             R"(finish (cnp-server's --call-timeout, 2s, caps )"));
  EXPECT_THAT(LinesOf(capped)[0], HasSubstr("CouchDB's timeout, 600000 ms"));

  reset_then_add(R"(["reset",{"timeout":1000}])");
  EXPECT_EQ(session.ServerCapNote(), "");
  std::optional<v1::SessionOutput> own = session.Handle(R"(["map_doc",{"_id":"a"}])");
  EXPECT_THAT(LinesOf(own),
              ElementsAre(R"(["error","timeout","cnp-server: the map did not finish (the )"
                          R"(deadline was CouchDB's timeout, 1000 ms from its reset, less 500 ms )"
                          R"(for the answer to reach CouchDB; over this stream a function's )"
                          R"(log() lines come with its answer and do not extend it. CouchDB's )"
                          R"x(os_process_timeout sets it, for commands that need longer)"])x"));
  // What the pool said stays: a wait for a busy worker names its own remedy.
  runner.on_run = [](const Task&) {
    return absl::DeadlineExceededError(
        "the deadline passed while waiting for one of the 2 busy workers; retry later or run "
        "more workers (--workers)");
  };
  std::optional<v1::SessionOutput> queued = session.Handle(R"(["map_doc",{"_id":"b"}])");
  ASSERT_EQ(LinesOf(queued).size(), 1u);
  EXPECT_THAT(LinesOf(queued)[0], AllOf(HasSubstr("run more workers (--workers) (the deadline "
                                                  "was CouchDB's timeout, 1000 ms"),
                                        Not(HasSubstr("--call-timeout"))));
}

// Found by a review: an add_fun whose import ran the worker out of memory was answered with the
// memory error, yet the function stayed in the session and the answer was marked accepted, so
// cnp-adapter would teach it to a new stream. Neither now: a map_doc runs no function.
TEST_F(QuerySessionTest, AnAddFunAnsweredWithTheMemoryErrorIsNotKept) {
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(resolve { functions { function: "f" } } recycle: true)pb");
  };
  std::optional<v1::SessionOutput> out = session_.Handle(R"(["add_fun","fns.big"])");
  ASSERT_TRUE(out.has_value());
  EXPECT_THAT(LinesOf(out), ElementsAre(StartsWith(R"(["error","memory_error",)")));
  EXPECT_FALSE(out->accepted());
  int runs = 0;
  runner_.on_run = [&](const Task&) {
    ++runs;
    return ReplyFromText(R"pb(map { results { rows: "[[[1,null]]]" } })pb");
  };
  EXPECT_THAT(Send(R"(["map_doc",{"_id":"a"}])"), ElementsAre("[]"));
  EXPECT_EQ(runs, 0);
}

// A worker that raised MemoryError answers with what it had and asks to be replaced: the
// document's rows may be missing, so CouchDB gets an error (and tries again), never "[[]]",
// which would leave the document out of the view for good. The same for a reduce's null.
TEST_F(QuerySessionTest, AWorkerOutOfMemoryIsAnErrorNeverAnEmptyResult) {
  AddFun("fns.big");
  runner_.on_run = [](const Task&) {
    return ReplyFromText(
        R"pb(map {
               results {
                 rows: "[[]]"
                 errors { function: "fns.big" doc_id: "a" type: "MemoryError" message: "" }
               }
             }
             recycle: true)pb");
  };
  std::optional<v1::SessionOutput> out = session_.Handle(R"(["map_doc",{"_id":"a"}])");
  EXPECT_THAT(LinesOf(out),
              ElementsAre(HasSubstr("MemoryError"),
                          StartsWith(R"(["error","memory_error","cnp-server: MemoryError: )")));
  EXPECT_FALSE(Exits(out));  // the server replaces the worker; the session goes on

  runner_.on_run = [](const Task&) {
    return ReplyFromText(
        R"pb(reduce {
               results: "null"
               errors { function: "fns.r" type: "MemoryError" message: "" }
             }
             recycle: true)pb");
  };
  EXPECT_THAT(Send(R"(["reduce",["fns.r"],[[[1,"a"],2]]])"),
              ElementsAre(HasSubstr("MemoryError"), StartsWith(R"(["error","memory_error",)")));

  // The next document, on a worker that did not run out, is answered as usual.
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(map { results { rows: "[[[1,null]]]" } })pb");
  };
  EXPECT_THAT(Send(R"(["map_doc",{"_id":"b"}])"), ElementsAre("[[[1,null]]]"));
}

// A worker replaced because a function's thread outlived its call (worker.proto's
// threads_left_running) ran out of nothing: its answer stands.
TEST_F(QuerySessionTest, AWorkerReplacedForItsThreadsAnswersInFull) {
  AddFun("fns.leaky");
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(map { results { rows: "[[[\"a\",null]]]" } }
                              recycle: true
                              threads_left_running: true)pb");
  };
  EXPECT_THAT(Send(R"(["map_doc",{"_id":"a"}])"), ElementsAre(R"([[["a",null]]])"));
}

TEST_F(QuerySessionTest, ReduceRunsEveryFunctionAndNullsExceptions) {
  runner_.on_run = [](const Task& task) {
    EXPECT_THAT(task.reduce().functions(), ElementsAre("fns.sum", "fns.bad"));
    EXPECT_FALSE(task.reduce().rereduce());
    EXPECT_EQ(task.reduce().kvs(), R"([[[1,"a"],2],[[2,"b"],3]])");
    return ReplyFromText(
        R"pb(reduce {
               results: "5"
               results: "null"
               errors { function: "fns.bad" type: "ZeroDivisionError" message: "division by zero" }
             })pb");
  };
  EXPECT_THAT(
      Send(R"(["reduce",["fns.sum","fns.bad"],[[[1,"a"],2],[[2,"b"],3]]])"),
      ElementsAre(R"j(["log","function raised exception (ZeroDivisionError: division by zero)"])j",
                  "[true,[5,null]]"));
}

// As a map's: each function's log lines, then its exception line (they came all logs first).
TEST_F(QuerySessionTest, ReduceLogAndExceptionLinesComeFunctionByFunction) {
  runner_.on_run = [](const Task&) {
    return ReplyFromText(
        R"pb(reduce {
               results: "null"
               results: "2"
               logs: "a says"
               logs: "b says"
               errors { function: "fns.a" type: "ValueError" message: "v" logs_before: 1 }
             })pb");
  };
  EXPECT_THAT(Send(R"(["reduce",["fns.a","fns.b"],[[[1,"a"],2],[[2,"b"],3]]])"),
              ElementsAre(R"(["log","a says"])", R"j(["log","function raised exception (ValueError: v)"])j",
                          R"(["log","b says"])", "[true,[null,2]]"));
}

TEST_F(QuerySessionTest, RereduceIgnoresExtraTrailingArguments) {
  runner_.on_run = [](const Task& task) {
    EXPECT_TRUE(task.reduce().rereduce());
    EXPECT_EQ(task.reduce().kvs(), "[1,2,3]");
    return ReplyFromText(R"pb(reduce { results: "6" })pb");
  };
  EXPECT_THAT(Send(R"(["rereduce",["fns.sum"],[1,2,3],"shard 0 view v"])"),
              ElementsAre("[true,[6]]"));
}

TEST_F(QuerySessionTest, ReduceLimitFollowsCouchDB) {
  const std::string big = absl::StrCat("\"", std::string(5000, 'x'), "\"");
  runner_.on_run = [&](const Task&) {
    Reply reply;
    reply.mutable_reduce()->add_results(big);
    return reply;
  };
  const std::string small_input = R"(["reduce",["fns.echo"],[[[1,"a"],2]]])";

  session_.Handle(R"(["reset",{"reduce_limit":true,"timeout":5000}])");
  EXPECT_THAT(
      Send(small_input),
      ElementsAre(StartsWith(
          R"(["error","reduce_overflow_error","Reduce output must shrink more rapidly: input size: )")));

  session_.Handle(R"(["reset",{"reduce_limit":"log","timeout":5000}])");
  EXPECT_THAT(Send(small_input),
              ElementsAre(StartsWith(R"(["log","reduce_overflow_error: Reduce output must shrink)"),
                          absl::StrCat("[true,[", big, "]]")));

  session_.Handle(R"(["reset",{"reduce_limit":false,"timeout":5000}])");
  EXPECT_THAT(Send(small_input), ElementsAre(absl::StrCat("[true,[", big, "]]")));

  // An input large enough for the output is fine even with the limit on.
  session_.Handle(R"(["reset",{"reduce_limit":true,"timeout":5000}])");
  const std::string large_input =
      absl::StrCat(R"(["reduce",["fns.echo"],[[[1,"a"],")", std::string(12000, 'y'), "\"]]]");
  EXPECT_THAT(Send(large_input), ElementsAre(absl::StrCat("[true,[", big, "]]")));
}

// CouchDB's compile check on saving a design document is add_fun: an async def map function
// would build an empty view, so it fails there; a generator is how map functions yield.
TEST_F(QuerySessionTest, AddFunRefusesAsyncMapFunctions) {
  for (const char* body : {"COROUTINE", "ASYNC_GENERATOR"}) {
    runner_.on_run = [body](const Task&) {
      return ReplyFromText(absl::StrCat(
          R"pb(resolve { functions { function: "fns.amap" body: )pb", body, " } }"));
    };
    EXPECT_THAT(
        Send(R"(["add_fun","fns.amap"])"),
        ElementsAre(AllOf(StartsWith(R"(["error","compilation_error","fns.amap: an async def)"),
                          HasSubstr("emit nothing for every document"))))
        << body;
  }
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(resolve { functions { function: "fns.gen" body: GENERATOR } })pb");
  };
  EXPECT_THAT(Send(R"(["add_fun","fns.gen"])"), ElementsAre("true"));
  // Only the generator was added.
  runner_.on_run = [](const Task& task) {
    EXPECT_THAT(task.map().functions(), ElementsAre("fns.gen"));
    return ReplyFromText(R"pb(map { results { rows: "[[]]" } })pb");
  };
  EXPECT_THAT(Send(R"(["map_doc",{"_id":"a"}])"), ElementsAre("[[]]"));
}

// couchjs measures JSON.stringify(reductions).length and the line's length: UTF-16 code units,
// not UTF-8 bytes.
TEST_F(QuerySessionTest, ReduceLimitCountsJavaScriptLengthNotBytes) {
  std::string result;
  runner_.on_run = [&](const Task&) {
    Reply reply;
    reply.mutable_reduce()->add_results(result);
    return reply;
  };
  const std::string small_input = R"(["reduce",["fns.cjk"],[[[1,"a"],1]]])";
  session_.Handle(R"(["reset",{"reduce_limit":true}])");

  // "日" is 3 bytes and 1 unit: [\"日日...\"] is 6004 bytes, 2004 units, within 4096.
  std::string cjk;
  for (int i = 0; i < 2000; ++i) cjk += "\xE6\x97\xA5";
  result = absl::StrCat("\"", cjk, "\"");
  EXPECT_THAT(Send(small_input), ElementsAre(absl::StrCat("[true,[", result, "]]")));

  // "😀" is 4 bytes and 2 units (a surrogate pair): 2100 of them are 4204 units, over it.
  std::string faces;
  for (int i = 0; i < 2100; ++i) faces += "\xF0\x9F\x98\x80";
  result = absl::StrCat("\"", faces, "\"");
  EXPECT_THAT(Send(small_input),
              ElementsAre(absl::StrCat(
                  R"(["error","reduce_overflow_error","Reduce output must shrink more rapidly: )",
                  R"(input size: 29 output size: 4204"])")));

  // The input is measured so too: 2200 "日" in a value are 2200 units of it, not 6600 bytes,
  // which would have let the 4204-unit output through.
  std::string cjk_input = R"(["reduce",["fns.cjk"],[[[1,"a"],")";
  for (int i = 0; i < 2200; ++i) cjk_input += "\xE6\x97\xA5";
  cjk_input += "\"]]]";
  EXPECT_THAT(Send(cjk_input),
              ElementsAre(StartsWith(
                  R"(["error","reduce_overflow_error","Reduce output must shrink more rapidly: )"
                  R"(input size: 2230 output size: 4204")")));
}

class DesignDocTest : public QuerySessionTest {
 protected:
  void SetUp() override {
    ASSERT_THAT(Send(R"(["ddoc","new","_design/d",{"_id":"_design/d","language":"python",)"
                     R"("validate_doc_update":"fns.vdu","filters":{"by_town":"fns.by_town|1"},)"
                     R"("views":{"oslo":{"map":"fns.oslo"}},"shows":{"hello":"fns.hello"},)"
                     R"("lists":{"rows":"fns.rows"},"updates":{"bump":"fns.bump"},)"
                     R"("rewrites":"fns.rewrite"}])"),
                ElementsAre("true"));
  }
};

TEST_F(DesignDocTest, ValidateReplies) {
  const std::string call =
      R"(["ddoc","_design/d",["validate_doc_update"],[{"_id":"x"},null,{"roles":[]},{}]])";
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(validate { outcome: FORBIDDEN message: "type is \"required\"" })pb");
  };
  EXPECT_THAT(Send(call), ElementsAre(R"({"forbidden":"type is \"required\""})"));
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(validate { outcome: UNAUTHORIZED message: "admins only" })pb");
  };
  EXPECT_THAT(Send(call), ElementsAre(R"({"unauthorized":"admins only"})"));
  runner_.on_run = [](const Task&) {
    return ReplyFromText(
        R"pb(validate {
               outcome: ERROR
               error { type: "TypeError" message: "'NoneType' object is not callable" }
               logs: "checking x"
             })pb");
  };
  EXPECT_THAT(Send(call),
              ElementsAre(R"(["log","checking x"])",
                          R"(["error","TypeError","'NoneType' object is not callable"])"));
}

// As couchjs: a thrown {forbidden: value} goes as it is, and a thrown ["error","not_found",msg]
// is that line (CouchDB's 404).
TEST_F(DesignDocTest, ValidateRejectionValuesAndNotFound) {
  const std::string call =
      R"(["ddoc","_design/d",["validate_doc_update"],[{"_id":"x"},null,{"roles":[]},{}]])";
  runner_.on_run = [](const Task&) {
    return ReplyFromText(
        R"pb(validate { outcome: FORBIDDEN message: "{'a': 1}" message_json: "{\"a\":1}" })pb");
  };
  EXPECT_THAT(Send(call), ElementsAre(R"({"forbidden":{"a":1}})"));
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(validate { outcome: NOT_FOUND message: "nf" })pb");
  };
  EXPECT_THAT(Send(call), ElementsAre(R"(["error","not_found","nf"])"));
}

TEST_F(DesignDocTest, DesignFunctionsGetTheirKindAndRawArguments) {
  struct Case {
    std::string path;
    v1::DesignFunctionKind kind;
    std::string function;
  };
  for (const Case& c : {Case{R"(["filters","by_town"])", v1::FILTER, "fns.by_town|1"},
                        Case{R"(["views","oslo","map"])", v1::VIEW_FILTER, "fns.oslo"},
                        Case{R"(["shows","hello"])", v1::SHOW, "fns.hello"},
                        Case{R"(["updates","bump"])", v1::UPDATE, "fns.bump"},
                        Case{R"(["rewrites"])", v1::REWRITE, "fns.rewrite"}}) {
    runner_.on_run = [](const Task&) {
      return ReplyFromText(R"pb(design { reply: "[true,[true]]" logs: "hi" })pb");
    };
    EXPECT_THAT(Send(absl::StrCat(R"(["ddoc","_design/d",)", c.path, R"(,[[{"a": 1}],{"q":2}]])")),
                ElementsAre(R"(["log","hi"])", "[true,[true]]"));
    const Task& task = runner_.tasks.back();
    EXPECT_EQ(task.design().kind(), c.kind) << c.path;
    EXPECT_EQ(task.design().function(), c.function);
    EXPECT_EQ(task.design().args(), R"([[{"a": 1}],{"q":2}])");
  }
}

TEST_F(DesignDocTest, MissingFunctionIsNotFoundAndTheSessionGoesOn) {
  std::optional<v1::SessionOutput> out =
      session_.Handle(R"(["ddoc","_design/d",["shows","nope"],[null,{}]])");
  EXPECT_THAT(
      LinesOf(out),
      ElementsAre(
          R"(["error","not_found","missing shows function nope on design doc _design/d"])"));
  EXPECT_FALSE(Exits(out));
}

TEST_F(DesignDocTest, UnknownSectionIsFatal) {
  std::optional<v1::SessionOutput> out =
      session_.Handle(R"(["ddoc","_design/d",["spells","x"],[]])");
  EXPECT_THAT(LinesOf(out),
              ElementsAre(R"(["fatal","unknown_command","unknown ddoc command 'spells'"])"));
  EXPECT_TRUE(Exits(out));
}

TEST_F(DesignDocTest, NewerRevisionReplacesTheOld) {
  Send(R"(["ddoc","new","_design/d",{"_id":"_design/d","shows":{"hello":"fns.hello2|2"}}])");
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(design { reply: "[\"resp\",{}]" })pb");
  };
  Send(R"(["ddoc","_design/d",["shows","hello"],[null,{}]])");
  EXPECT_EQ(runner_.tasks.back().design().function(), "fns.hello2|2");
  EXPECT_THAT(Send(R"(["ddoc","_design/d",["filters","by_town"],[[],{}]])"),
              ElementsAre(StartsWith(R"(["error","not_found",)")));
}

TEST_F(DesignDocTest, DesignCallFailureIsAnError) {
  runner_.on_run = [](const Task&) { return absl::UnavailableError("worker crashed"); };
  EXPECT_THAT(Send(R"(["ddoc","_design/d",["filters","by_town"],[[{}],{}]])"),
              ElementsAre(R"(["error","unavailable","cnp-server: worker crashed"])"));
  runner_.on_run = [](const Task&) {
    return ReplyFromText(
        R"pb(failure { code: NOT_FOUND message: "ImportError: No module named 'fns'" })pb");
  };
  EXPECT_THAT(Send(R"(["ddoc","_design/d",["filters","by_town"],[[{}],{}]])"),
              ElementsAre(R"(["error","compile_load","ImportError: No module named 'fns'"])"));
}

// A design document names many functions: the error says which one failed to load.
TEST_F(DesignDocTest, ALoadFailureNamesTheFunction) {
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(failure {
                                code: VERSION_MISMATCH
                                function: "fns.by_town|2"
                                message: "ValueError: Loaded version 1 did not match expected version 2"
                              })pb");
  };
  EXPECT_THAT(
      Send(R"(["ddoc","_design/d",["filters","by_town"],[[{}],{}]])"),
      ElementsAre(
          R"(["error","compile_load","fns.by_town|2: ValueError: Loaded version 1 did not match expected version 2"])"));
}

TEST_F(DesignDocTest, ListExchangesRowsOnOneWorker) {
  std::vector<std::string> steps = {R"(["start",["head"],{"headers":{}}])", R"(["chunks",["a"]])",
                                    R"(["chunks",["b"]])", R"(["end",["tail"]])"};
  size_t step = 0;
  runner_.on_exchange = [&](const Task&) {
    Reply reply;
    reply.mutable_list_step()->set_reply(steps[step]);
    reply.mutable_list_step()->set_done(step == steps.size() - 1);
    ++step;
    return reply;
  };
  EXPECT_THAT(Send(R"(["ddoc","_design/d",["lists","rows"],[{"total_rows":2},{"q":1}]])"),
              ElementsAre(steps[0]));
  EXPECT_EQ(runner_.tasks.back().list_start().function(), "fns.rows");
  EXPECT_EQ(runner_.tasks.back().list_start().head(), R"({"total_rows":2})");
  EXPECT_EQ(runner_.tasks.back().list_start().req(), R"({"q":1})");
  EXPECT_THAT(Send(R"(["list_row",{"key":"a"}])"), ElementsAre(steps[1]));
  EXPECT_EQ(runner_.tasks.back().list_row().row(), R"({"key":"a"})");
  EXPECT_THAT(Send(R"(["list_row",{"key":"b"}])"), ElementsAre(steps[2]));
  EXPECT_THAT(Send(R"(["list_end"])"), ElementsAre(steps[3]));
  EXPECT_TRUE(runner_.tasks.back().list_row().row().empty());
  EXPECT_EQ(runner_.leases_released, 1);
}

TEST_F(DesignDocTest, ListEndingEarlyThenAnotherRowExits) {
  int step = 0;
  runner_.on_exchange = [&](const Task&) {
    Reply reply;
    reply.mutable_list_step()->set_reply(step == 0 ? R"(["start",[],{"headers":{}}])"
                                                   : R"(["end",["fooz","early"]])");
    reply.mutable_list_step()->set_done(step++ > 0);
    return reply;
  };
  Send(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])");
  EXPECT_THAT(Send(R"(["list_row",{"key":"fooz"}])"), ElementsAre(R"(["end",["fooz","early"]])"));
  EXPECT_EQ(runner_.leases_released, 1);
  std::optional<v1::SessionOutput> out = session_.Handle(R"(["list_row",{"key":"foox"}])");
  EXPECT_THAT(LinesOf(out),
              ElementsAre(R"(["error","unknown_command","unknown command 'list_row'"])"));
  EXPECT_TRUE(Exits(out));
}

TEST_F(DesignDocTest, ListEndingEarlyThenResetGoesOn) {
  int step = 0;
  runner_.on_exchange = [&](const Task&) {
    Reply reply;
    reply.mutable_list_step()->set_reply(step == 0 ? R"(["start",[],{"headers":{}}])"
                                                   : R"(["end",["early"]])");
    reply.mutable_list_step()->set_done(step++ > 0);
    return reply;
  };
  Send(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])");
  Send(R"(["list_row",{"key":"x"}])");
  EXPECT_FALSE(session_.Handle(R"(["reset",{"timeout":5000}])").has_value());
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(design { reply: "[true,[false]]" })pb");
  };
  EXPECT_THAT(Send(R"(["ddoc","_design/d",["filters","by_town"],[[{}],{}]])"),
              ElementsAre("[true,[false]]"));
}

TEST_F(DesignDocTest, NonRowDuringAListIsFatal) {
  runner_.on_exchange = [&](const Task&) {
    Reply reply;
    reply.mutable_list_step()->set_reply(R"(["start",[],{"headers":{}}])");
    return reply;
  };
  Send(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])");
  std::optional<v1::SessionOutput> out = session_.Handle(R"(["map_doc",{}])");
  EXPECT_THAT(LinesOf(out), ElementsAre(R"(["fatal","list_error","not a row 'map_doc'"])"));
  EXPECT_TRUE(Exits(out));
  // The abandoned function was given the end of its rows, so its worker is free again.
  EXPECT_TRUE(runner_.tasks.back().has_list_row());
  EXPECT_TRUE(runner_.tasks.back().list_row().row().empty());
  EXPECT_EQ(runner_.leases_released, 1);
}

// Found by a review: a line that is not a command is quoted shortened to 100 bytes, and the
// cut could fall inside a character, leaving a lone lead byte that CouchDB's JSON decoder
// refuses (it then logs a decode crash instead of the reason).
TEST_F(DesignDocTest, ANonRowQuotedShortenedStaysUtf8) {
  runner_.on_exchange = [&](const Task&) {
    Reply reply;
    reply.mutable_list_step()->set_reply(R"(["start",[],{"headers":{}}])");
    return reply;
  };
  Send(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])");
  // A string whose 99th and 100th bytes are the two bytes of an é.
  const std::string line = absl::StrCat("\"", std::string(98, 'a'), "\xc3\xa9", std::string(10, 'b'), "\"");
  std::optional<v1::SessionOutput> out = session_.Handle(line);
  ASSERT_THAT(LinesOf(out), ElementsAre(StartsWith(R"(["fatal","list_error","not a row ')")));
  const std::string answer = LinesOf(out)[0];
  EXPECT_FALSE(FindInvalidUtf8(answer).has_value()) << answer;
  // The quote, escaped, then the a's: the é that did not fit whole is left out.
  EXPECT_THAT(answer, HasSubstr(absl::StrCat(R"('\")", std::string(98, 'a'), "'")));
  EXPECT_TRUE(Exits(out));
}

TEST_F(DesignDocTest, WorkerLostDuringAListIsAnError) {
  runner_.on_exchange = [&](const Task& task) -> absl::StatusOr<Reply> {
    if (task.has_list_row()) return absl::UnavailableError("worker crashed");
    Reply reply;
    reply.mutable_list_step()->set_reply(R"(["start",[],{"headers":{}}])");
    return reply;
  };
  Send(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])");
  EXPECT_THAT(Send(R"(["list_row",{"key":1}])"),
              ElementsAre(StartsWith(R"(["error","unavailable",)")));
  EXPECT_EQ(runner_.leases_released, 1);
}

TEST_F(QuerySessionTest, UncachedDesignDocIsFatal) {
  std::optional<v1::SessionOutput> out =
      session_.Handle(R"(["ddoc","_design/nope",["filters","f"],[[{}],{}]])");
  EXPECT_THAT(
      LinesOf(out),
      ElementsAre(R"(["fatal","query_protocol_error","uncached design doc: _design/nope"])"));
  EXPECT_TRUE(Exits(out));
}

TEST_F(QuerySessionTest, UnknownCommandExits) {
  std::optional<v1::SessionOutput> out = session_.Handle(R"(["index_doc",{}])");
  EXPECT_THAT(LinesOf(out),
              ElementsAre(R"(["error","unknown_command","unknown command 'index_doc'"])"));
  EXPECT_TRUE(Exits(out));
}

TEST_F(QuerySessionTest, LineThatIsNotJsonIsFatal) {
  for (std::string_view line : {std::string_view("hello"), std::string_view(R"(["add_fun","x)"),
                                std::string_view(R"(["ddoc","new","_design/x",{"a":)"),
                                std::string_view(R"({"not":"an array"})"), std::string_view("[]"),
                                std::string_view(R"(["add_lib",{}] trailing)")}) {
    std::optional<v1::SessionOutput> out = session_.Handle(line);
    EXPECT_THAT(LinesOf(out), ElementsAre(StartsWith(R"(["fatal","query_protocol_error",)")))
        << line;
    EXPECT_TRUE(Exits(out)) << line;
  }
  EXPECT_TRUE(runner_.tasks.empty());
}

TEST_F(QuerySessionTest, TruncatedMapDocIsNeverAnEmptyResult) {
  AddFun("fns.a");
  runner_.on_run = [](const Task&) {
    return ReplyFromText(
        R"pb(failure { code: BAD_INPUT message: "document is not valid JSON" })pb");
  };
  // Cut inside the document but ending in ']': the worker rejects the bytes.
  EXPECT_THAT(Send(R"(["map_doc",{"_id":"a","tags":[1,2])"),
              ElementsAre(R"(["error","bad_input","document is not valid JSON"])"));
  // Cut elsewhere: not JSON at all.
  EXPECT_TRUE(Exits(session_.Handle(R"(["map_doc",{"_id":"a")")));
}

TEST_F(QuerySessionTest, HugeDocumentPassesThroughWhole) {
  AddFun("fns.a");
  const std::string doc =
      absl::StrCat(R"({"_id":"big","blob":")", std::string(8 << 20, 'z'), "\"}");
  runner_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(map { results { rows: "[[]]" } })pb");
  };
  EXPECT_THAT(Send(absl::StrCat("[\"map_doc\",", doc, "]")), ElementsAre("[[]]"));
  EXPECT_EQ(runner_.tasks.back().map().docs(0), doc);
}

// The server's Session stream gives each line up to the protocol: a large document is moved
// into the worker's task and a large row out of the worker's reply, each held once, not twice
// (tests/security/limits/call_memory_test measures what that saves).
TEST(QueryProtocolTest, ALargeDocumentAndItsRowsAreMovedNotCopied) {
  QueryProtocol protocol(QueryProtocol::Options{});
  const auto answer = [&](QueryProtocol::Step step) {
    return std::holds_alternative<QueryProtocol::Answer>(step) &&
           std::get<QueryProtocol::Answer>(step).output;
  };
  ASSERT_TRUE(std::holds_alternative<QueryProtocol::RunTask>(
      protocol.Handle(R"(["add_fun","fns.a"])")));
  ASSERT_TRUE(answer(protocol.Resume(ReplyFromText(kResolved))));

  const std::string doc =
      absl::StrCat(R"({"_id":"big","blob":")", std::string(1 << 20, 'z'), "\"}");
  std::string line = absl::StrCat("[\"map_doc\",", doc, "]");
  const char* const line_bytes = line.data();
  QueryProtocol::Step step = protocol.Handle(line, &line);
  const auto* run = std::get_if<QueryProtocol::RunTask>(&step);
  ASSERT_NE(run, nullptr);
  EXPECT_EQ(run->task->map().docs(0), doc);
  EXPECT_EQ(run->task->map().docs(0).data(), line_bytes);

  Reply reply;
  std::string* rows = reply.mutable_map()->add_results()->mutable_rows();
  *rows = absl::StrCat(R"([[["big",")", std::string(1 << 20, 'r'), "\"]]]");
  const std::string expected = *rows;
  const char* const rows_bytes = rows->data();
  ASSERT_TRUE(answer(protocol.Resume(std::move(reply))));
  ASSERT_EQ(protocol.output().lines_size(), 1);
  EXPECT_EQ(protocol.output().lines(0), expected);
  EXPECT_EQ(protocol.output().lines(0).data(), rows_bytes);

  // Without the line given up, the same document is copied and answered alike.
  const std::string kept = absl::StrCat("[\"map_doc\",", doc, "]");
  step = protocol.Handle(kept);
  run = std::get_if<QueryProtocol::RunTask>(&step);
  ASSERT_NE(run, nullptr);
  EXPECT_EQ(run->task->map().docs(0), doc);
}

TEST_F(QuerySessionTest, AddLibIsAccepted) {
  EXPECT_THAT(Send(R"(["add_lib",{"utils":"exports.x = 1;"}])"), ElementsAre("true"));
}

TEST_F(QuerySessionTest, LogTextIsEscaped) {
  AddFun("fns.a");
  runner_.on_run = [](const Task&) {
    return ReplyFromText(
        R"pb(map { results { rows: "[[]]" logs: "tab\there \"quoted\" \\ \001" } })pb");
  };
  EXPECT_THAT(Send(R"(["map_doc",{}])"),
              ElementsAre(R"(["log","tab\there \"quoted\" \\ \u0001"])", "[[]]"));
}

}  // namespace
}  // namespace cnp::couchdb
