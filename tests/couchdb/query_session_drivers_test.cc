// The two drivers of one protocol (QueryProtocol): QuerySession over blocking calls and
// AsyncQuerySession over awaited ones must answer every line alike, hold a list's worker the
// same way and give it back the same way. Every test runs through both.
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/use_awaitable.hpp"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "service/couchdb/async_query_session.h"
#include "service/couchdb/query_session.h"
#include "tests/couchdb/session_lines.h"

namespace cnp::couchdb {
namespace {

using session_testing::LinesOf;

using pool::Reply;
using pool::Task;
using ::testing::ElementsAre;
using ::testing::StartsWith;

Reply ReplyFromText(const std::string& text) {
  Reply reply;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &reply)) << text;
  return reply;
}

// What the workers answer, shared by the blocking and the awaitable runner below.
struct Script {
  std::function<absl::StatusOr<Reply>(const Task&)> on_run;
  std::function<absl::StatusOr<Reply>(const Task&)> on_exchange;
  absl::Status lease_status;  // what taking a lease gives, when not OK
  std::vector<Task> tasks;    // every task run or exchanged, in order
  int leases_taken = 0;
  int leases_released = 0;

  absl::StatusOr<Reply> Run(const Task& task) {
    tasks.push_back(task);
    if (!on_run) return absl::InternalError("the test did not expect a task");
    return on_run(task);
  }
  absl::StatusOr<Reply> Exchange(const Task& task) {
    tasks.push_back(task);
    if (!on_exchange) return absl::InternalError("the test did not expect a list step");
    return on_exchange(task);
  }
};

class BlockingRunner final : public pool::TaskRunner {
 public:
  explicit BlockingRunner(Script& script) : script_(script) {}
  absl::StatusOr<Reply> Run(const Task& task, absl::Time) override { return script_.Run(task); }
  absl::StatusOr<std::unique_ptr<pool::WorkerLease>> Lease(absl::Time) override {
    if (!script_.lease_status.ok()) return script_.lease_status;
    ++script_.leases_taken;
    return std::make_unique<Held>(script_);
  }

 private:
  class Held final : public pool::WorkerLease {
   public:
    explicit Held(Script& script) : script_(script) {}
    ~Held() override { ++script_.leases_released; }
    absl::StatusOr<Reply> Exchange(const Task& task, absl::Time) override {
      return script_.Exchange(task);
    }

   private:
    Script& script_;
  };
  Script& script_;
};

class AwaitableRunner final : public pool::AsyncTaskRunner {
 public:
  explicit AwaitableRunner(Script& script) : script_(script) {}
  asio::awaitable<absl::StatusOr<Reply>> Run(Task task, absl::Time) override {
    co_return script_.Run(task);
  }
  asio::awaitable<std::vector<absl::StatusOr<Reply>>> RunAll(std::vector<Task> tasks,
                                                             absl::Time) override {
    std::vector<absl::StatusOr<Reply>> replies;
    for (const Task& task : tasks) replies.push_back(script_.Run(task));
    co_return replies;
  }
  asio::awaitable<absl::StatusOr<std::unique_ptr<pool::AsyncWorkerLease>>> Lease(
      absl::Time) override {
    if (!script_.lease_status.ok()) co_return script_.lease_status;
    ++script_.leases_taken;
    co_return std::make_unique<Held>(script_);
  }
  int size() const override { return 1; }

 private:
  class Held final : public pool::AsyncWorkerLease {
   public:
    explicit Held(Script& script) : script_(script) {}
    ~Held() override { ++script_.leases_released; }
    asio::awaitable<absl::StatusOr<Reply>> Exchange(Task task, absl::Time) override {
      co_return script_.Exchange(task);
    }

   private:
    Script& script_;
  };
  Script& script_;
};

// A session seen through one driver.
class Driver {
 public:
  virtual ~Driver() = default;
  virtual std::optional<v1::SessionOutput> Handle(std::string_view line) = 0;
  // The session's end: an open list gets the end of its rows.
  virtual void Close() = 0;
  virtual bool list_in_progress() const = 0;
};

class BlockingDriver final : public Driver {
 public:
  explicit BlockingDriver(Script& script) : runner_(script) {}
  std::optional<v1::SessionOutput> Handle(std::string_view line) override {
    return session_->Handle(line);
  }
  void Close() override { session_.reset(); }
  bool list_in_progress() const override { return session_->list_in_progress(); }

 private:
  BlockingRunner runner_;
  std::unique_ptr<QuerySession> session_ = std::make_unique<QuerySession>(runner_);
};

class AwaitingDriver final : public Driver {
 public:
  explicit AwaitingDriver(Script& script) : runner_(script) {}
  std::optional<v1::SessionOutput> Handle(std::string_view line) override {
    std::optional<v1::SessionOutput> answer;
    bool done = false;
    asio::co_spawn(io_, session_.Handle(line),
                   [&](std::exception_ptr error, std::optional<v1::SessionOutput> output) {
                     if (error) std::rethrow_exception(error);
                     answer = std::move(output);
                     done = true;
                   });
    io_.restart();
    io_.run();
    EXPECT_TRUE(done);
    return answer;
  }
  void Close() override {
    bool done = false;
    asio::co_spawn(io_, session_.Close(), [&](std::exception_ptr error) {
      if (error) std::rethrow_exception(error);
      done = true;
    });
    io_.restart();
    io_.run();
    EXPECT_TRUE(done);
  }
  bool list_in_progress() const override { return session_.list_in_progress(); }

 private:
  asio::io_context io_;
  AwaitableRunner runner_;
  AsyncQuerySession session_{runner_};
};

constexpr char kResolved[] = R"pb(resolve { functions { function: "f" } })pb";
constexpr char kDesignDoc[] =
    R"(["ddoc","new","_design/d",{"_id":"_design/d","lists":{"rows":"fns.rows"},)"
    R"("filters":{"by_town":"fns.by_town"}}])";

class DriversTest : public ::testing::TestWithParam<bool> {
 protected:
  DriversTest() {
    if (GetParam()) {
      driver_ = std::make_unique<AwaitingDriver>(script_);
    } else {
      driver_ = std::make_unique<BlockingDriver>(script_);
    }
  }

  std::optional<v1::SessionOutput> Handle(std::string_view line) { return driver_->Handle(line); }
  std::vector<std::string> Send(std::string_view line) { return LinesOf(Handle(line)); }

  // A list whose function asks for rows until list_end, answering each step in order.
  void ScriptList(std::vector<std::string> steps) {
    script_.on_exchange = [this, steps = std::move(steps)](const Task&) {
      Reply reply;
      reply.mutable_list_step()->set_reply(steps[step_]);
      reply.mutable_list_step()->set_done(step_ == steps.size() - 1);
      ++step_;
      return reply;
    };
  }

  Script script_;
  size_t step_ = 0;
  std::unique_ptr<Driver> driver_;
};

INSTANTIATE_TEST_SUITE_P(BlockingAndAwaiting, DriversTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "awaiting" : "blocking";
                         });

TEST_P(DriversTest, MapsADocumentWithTheFunctionsAdded) {
  script_.on_run = [](const Task&) { return ReplyFromText(kResolved); };
  std::optional<v1::SessionOutput> added = Handle(R"(["add_fun","fns.by_town|1"])");
  EXPECT_THAT(LinesOf(added), ElementsAre("true"));
  EXPECT_TRUE(added->accepted());
  script_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(map { results { rows: "[[[\"Oslo\",1]]]" logs: "seen" } })pb");
  };
  std::optional<v1::SessionOutput> mapped = Handle(R"(["map_doc",{"_id":"a","town":"Oslo"}])");
  EXPECT_THAT(LinesOf(mapped), ElementsAre(R"(["log","seen"])", R"([[["Oslo",1]]])"));
  EXPECT_FALSE(mapped->accepted());
  ASSERT_EQ(script_.tasks.size(), 2u);
  EXPECT_THAT(script_.tasks[1].map().functions(), ElementsAre("fns.by_town|1"));
  EXPECT_EQ(script_.tasks[1].map().docs(0), R"({"_id":"a","town":"Oslo"})");
}

TEST_P(DriversTest, MarksWhatTheSessionWasTaught) {
  EXPECT_TRUE(Handle(R"(["add_lib",{}])")->accepted());
  EXPECT_TRUE(Handle(kDesignDoc)->accepted());
  script_.on_run = [](const Task&) {
    return ReplyFromText(R"pb(resolve { functions { function: "f" error: "ImportError: x" } })pb");
  };
  std::optional<v1::SessionOutput> refused = Handle(R"(["add_fun","fns.missing"])");
  EXPECT_THAT(LinesOf(refused), ElementsAre(R"(["error","compilation_error","ImportError: x"])"));
  EXPECT_FALSE(refused->accepted());
  // A reply that happens to be the line `true` is not a lesson.
  script_.on_run = [](const Task&) { return ReplyFromText(R"pb(design { reply: "true" })pb"); };
  std::optional<v1::SessionOutput> shown = Handle(R"(["ddoc","_design/d",["filters","by_town"],[]])");
  EXPECT_THAT(LinesOf(shown), ElementsAre("true"));
  EXPECT_FALSE(shown->accepted());
}

TEST_P(DriversTest, InfrastructureFailureIsAnErrorNeverAnEmptyResult) {
  script_.on_run = [](const Task&) { return ReplyFromText(kResolved); };
  Send(R"(["add_fun","fns.a"])");
  script_.on_run = [](const Task&) -> absl::StatusOr<Reply> {
    return absl::DeadlineExceededError("the worker did not answer in time");
  };
  // What the pool said, and the command's budget (CouchDB's timeout) that ended it.
  EXPECT_THAT(Send(R"(["map_doc",{}])"),
              ElementsAre(StartsWith(R"(["error","timeout","cnp-server: the worker did not )"
                                     R"(answer in time (the deadline was CouchDB's timeout, )"
                                     R"(5000 ms by default as no reset gave one)")));
}

// CouchDB never teaches a live process a design document again: a process serving many
// databases (a validate_doc_update in each, as per-user databases have) must still know the
// first it was taught after 100,000 others, or the write that document validates fails.
// couchjs reduces with each function it is given: given none, it answers [true,[]], with no
// worker to ask. It was answered ["error","query_protocol_error",..], which fails the view.
TEST_P(DriversTest, AReduceOfNoFunctionsIsAnsweredWithNoReductions) {
  EXPECT_THAT(Send(R"(["reduce",[],[[[1,"a"],2],[[2,"b"],3]]])"), ElementsAre("[true,[]]"));
  EXPECT_THAT(Send(R"(["rereduce",[],[1,2]])"), ElementsAre("[true,[]]"));
  EXPECT_THAT(Send(R"(["rereduce",[],[]])"), ElementsAre("[true,[]]"));
  EXPECT_TRUE(script_.tasks.empty());
  // An empty list of values is a reduce like any other: the worker runs the function on it.
  script_.on_run = [](const Task&) { return ReplyFromText(R"pb(reduce { results: "0" })pb"); };
  EXPECT_THAT(Send(R"(["rereduce",["fns.sum"],[]])"), ElementsAre("[true,[0]]"));
  ASSERT_EQ(script_.tasks.size(), 1u);
  EXPECT_EQ(script_.tasks[0].reduce().kvs(), "[]");
}

// ["map_doc",{doc},"extra"]: couchjs maps the document and ignores the rest. The worker is
// handed the unchecked text and refuses it; the document alone is then mapped.
TEST_P(DriversTest, AMapDocsExtraArgumentsAreIgnored) {
  script_.on_run = [](const Task&) { return ReplyFromText(kResolved); };
  Send(R"(["add_fun","fns.a"])");
  script_.on_run = [](const Task& task) -> absl::StatusOr<Reply> {
    if (task.map().docs(0) != R"({"_id":"a"})") {
      return ReplyFromText(R"pb(failure { code: BAD_INPUT message: "invalid JSON" })pb");
    }
    return ReplyFromText(R"pb(map { results { rows: "[[[\"a\",1]]]" } })pb");
  };
  EXPECT_THAT(Send(R"(["map_doc",{"_id":"a"},"extra",{"x":[1]}])"),
              ElementsAre(R"([[["a",1]]])"));
  ASSERT_EQ(script_.tasks.size(), 3u);
  EXPECT_EQ(script_.tasks[1].map().docs(0), R"({"_id":"a"},"extra",{"x":[1]})");
  // A document that is not JSON is still the worker's bad_input, asked once.
  EXPECT_THAT(Send(R"(["map_doc",{"_id":"a",}])"),
              ElementsAre(R"(["error","bad_input","invalid JSON"])"));
  EXPECT_EQ(script_.tasks.size(), 4u);
}

TEST_P(DriversTest, ADesignDocumentStaysTaughtAmongAHundredThousand) {
  for (int i = 0; i < 100000; ++i) {
    std::optional<v1::SessionOutput> taught = Handle(absl::StrCat(
        R"(["ddoc","new","_design/auth-)", i, R"(",{"_id":"_design/auth-)", i,
        R"(","_rev":"1-8f3e1a6b","language":"python","validate_doc_update":"users.validate_)", i,
        R"(|3"}])"));
    ASSERT_TRUE(taught.has_value() && taught->lines_size() == 1 && taught->lines(0) == "true")
        << i;
  }
  script_.on_run = [](const Task&) { return ReplyFromText(R"pb(validate { outcome: OK })pb"); };
  EXPECT_THAT(
      Send(R"(["ddoc","_design/auth-0",["validate_doc_update"],[{"_id":"x"},null,{},{}]])"),
      ElementsAre("1"));
  ASSERT_EQ(script_.tasks.size(), 1u);
  EXPECT_EQ(script_.tasks[0].validate().function(), "users.validate_0|3");
}

TEST_P(DriversTest, ResetIsAnsweredByNothing) {
  EXPECT_FALSE(Handle(R"(["reset",{"timeout":5000}])").has_value());
  EXPECT_TRUE(script_.tasks.empty());
}

TEST_P(DriversTest, ProtocolErrorsEndTheSession) {
  std::optional<v1::SessionOutput> unknown = Handle(R"(["index_doc",{}])");
  EXPECT_THAT(LinesOf(unknown),
              ElementsAre(R"(["error","unknown_command","unknown command 'index_doc'"])"));
  EXPECT_TRUE(unknown->exit());
  std::optional<v1::SessionOutput> junk = Handle("hello");
  EXPECT_THAT(LinesOf(junk), ElementsAre(StartsWith(R"(["fatal","query_protocol_error",)")));
  EXPECT_TRUE(junk->exit());
}

TEST_P(DriversTest, AListHoldsOneWorkerUntilItsEnd) {
  Send(kDesignDoc);
  ScriptList({R"(["start",["head"],{"headers":{}}])", R"(["chunks",["a"]])",
              R"(["end",["tail"]])"});
  EXPECT_THAT(Send(R"(["ddoc","_design/d",["lists","rows"],[{"total_rows":1},{"q":1}]])"),
              ElementsAre(R"(["start",["head"],{"headers":{}}])"));
  EXPECT_TRUE(driver_->list_in_progress());
  EXPECT_EQ(script_.leases_taken, 1);
  EXPECT_EQ(script_.leases_released, 0);
  EXPECT_EQ(script_.tasks.back().list_start().function(), "fns.rows");
  EXPECT_THAT(Send(R"(["list_row",{"key":"a"}])"), ElementsAre(R"(["chunks",["a"]])"));
  EXPECT_EQ(script_.tasks.back().list_row().row(), R"({"key":"a"})");
  EXPECT_THAT(Send(R"(["list_end"])"), ElementsAre(R"(["end",["tail"]])"));
  EXPECT_TRUE(script_.tasks.back().list_row().row().empty());
  EXPECT_FALSE(driver_->list_in_progress());
  EXPECT_EQ(script_.leases_taken, 1);
  EXPECT_EQ(script_.leases_released, 1);
}

TEST_P(DriversTest, TheListEndsWhenItsWorkerSaysDoneWhateverTheLine) {
  Send(kDesignDoc);
  // A function that raised: its error line, marked done. A step that merely looks like an
  // error is not the end.
  ScriptList({R"(["start",[],{"headers":{}}])", R"(["chunks",["[\"error\" is data"]])",
              R"(["error","render_error","KeyError: 'x'"])"});
  Send(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])");
  script_.on_exchange = [&, inner = script_.on_exchange](const Task& task) {
    absl::StatusOr<Reply> reply = inner(task);
    if (step_ == 2) reply->mutable_list_step()->set_reply(R"(["error","not","the end"])");
    return reply;
  };
  EXPECT_THAT(Send(R"(["list_row",{"key":1}])"), ElementsAre(R"(["error","not","the end"])"));
  EXPECT_TRUE(driver_->list_in_progress());
  EXPECT_THAT(Send(R"(["list_row",{"key":2}])"),
              ElementsAre(R"(["error","render_error","KeyError: 'x'"])"));
  EXPECT_FALSE(driver_->list_in_progress());
  EXPECT_EQ(script_.leases_released, 1);
}

TEST_P(DriversTest, ALineThatIsNotARowAbandonsTheList) {
  Send(kDesignDoc);
  ScriptList({R"(["start",[],{"headers":{}}])", R"(["end",[]])"});
  Send(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])");
  std::optional<v1::SessionOutput> out = Handle(R"(["map_doc",{}])");
  EXPECT_THAT(LinesOf(out), ElementsAre(R"(["fatal","list_error","not a row 'map_doc'"])"));
  EXPECT_TRUE(out->exit());
  // The function was given the end of its rows, so its worker is free again.
  EXPECT_TRUE(script_.tasks.back().has_list_row());
  EXPECT_TRUE(script_.tasks.back().list_row().row().empty());
  EXPECT_EQ(script_.leases_released, 1);
}

// CouchDB 3.4 teaches a design document the process lacks before its checkout's reset: the
// next user of a process whose list was left mid-way may send ["ddoc","new",..] first. It was
// answered ["fatal","list_error","not a row 'ddoc'"], which stopped the process and failed that
// request (an adapter review). Now it ends the list, as a reset does, and is learnt.
TEST_P(DriversTest, ADesignDocumentTaughtInAListEndsTheListAndIsLearnt) {
  Send(kDesignDoc);
  ScriptList({R"(["start",[],{"headers":{}}])", R"(["end",[]])"});
  Send(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])");
  std::optional<v1::SessionOutput> taught = Handle(
      R"(["ddoc","new","_design/v",{"_id":"_design/v","filters":{"mine":"fns.mine"}}])");
  EXPECT_THAT(LinesOf(taught), ElementsAre("true"));
  EXPECT_TRUE(taught->accepted());
  EXPECT_FALSE(taught->exit());
  EXPECT_FALSE(driver_->list_in_progress());
  EXPECT_TRUE(script_.tasks.back().has_list_row());
  EXPECT_TRUE(script_.tasks.back().list_row().row().empty());
  EXPECT_EQ(script_.leases_released, 1);
  // Learnt: a call of it runs (an unknown design document is a fatal "uncached design doc").
  script_.on_run = [](const Task&) { return ReplyFromText(R"pb(design { reply: "[true,[true]]" })pb"); };
  EXPECT_THAT(Send(R"(["ddoc","_design/v",["filters","mine"],[[{}],{}]])"),
              ElementsAre("[true,[true]]"));
}

TEST_P(DriversTest, ClosingInAListGivesItTheEndOfItsRows) {
  Send(kDesignDoc);
  ScriptList({R"(["start",[],{"headers":{}}])", R"(["end",[]])"});
  Send(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])");
  const size_t tasks = script_.tasks.size();
  driver_->Close();
  ASSERT_EQ(script_.tasks.size(), tasks + 1);
  EXPECT_TRUE(script_.tasks.back().list_row().row().empty());
  EXPECT_EQ(script_.leases_released, 1);
}

TEST_P(DriversTest, AResetAbandonsAList) {
  Send(kDesignDoc);
  ScriptList({R"(["start",[],{"headers":{}}])", R"(["end",[]])"});
  Send(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])");
  EXPECT_FALSE(Handle(R"(["reset",{}])").has_value());
  EXPECT_TRUE(script_.tasks.back().list_row().row().empty());
  EXPECT_FALSE(driver_->list_in_progress());
  EXPECT_EQ(script_.leases_released, 1);
}

TEST_P(DriversTest, NoWorkerForAListIsAnError) {
  Send(kDesignDoc);
  script_.lease_status = absl::ResourceExhaustedError("the queue is full");
  EXPECT_THAT(Send(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])"),
              ElementsAre(R"(["error","overloaded","cnp-server: the queue is full"])"));
  EXPECT_FALSE(driver_->list_in_progress());
  // The session goes on.
  script_.on_run = [](const Task&) { return ReplyFromText(R"(design { reply: "[true,[]]" })"); };
  EXPECT_THAT(Send(R"(["ddoc","_design/d",["filters","by_town"],[[],{}]])"),
              ElementsAre("[true,[]]"));
}

TEST_P(DriversTest, AWorkerLostInAListEndsIt) {
  Send(kDesignDoc);
  script_.on_exchange = [](const Task& task) -> absl::StatusOr<Reply> {
    if (task.has_list_row()) return absl::UnavailableError("worker crashed");
    return ReplyFromText(R"pb(list_step { reply: "[\"start\",[],{}]" })pb");
  };
  Send(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])");
  EXPECT_THAT(Send(R"(["list_row",{"key":1}])"),
              ElementsAre(R"(["error","unavailable","cnp-server: worker crashed"])"));
  EXPECT_FALSE(driver_->list_in_progress());
  EXPECT_EQ(script_.leases_released, 1);
}

// A stream whose coroutine is cancelled destroys its session without Close: the list still gets
// its end of rows, from a coroutine of its own on the session's executor.
TEST(AsyncQuerySessionTest, DestroyedInAListStillEndsIt) {
  Script script;
  script.on_exchange = [](const Task& task) {
    Reply reply;
    reply.mutable_list_step()->set_reply(R"(["start",[],{"headers":{}}])");
    reply.mutable_list_step()->set_done(task.has_list_row());
    return reply;
  };
  asio::io_context io;
  AwaitableRunner runner(script);
  auto session = std::make_unique<AsyncQuerySession>(runner);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await session->Handle(kDesignDoc);
        co_await session->Handle(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])");
      },
      [](std::exception_ptr error) {
        if (error) std::rethrow_exception(error);
      });
  io.run();
  ASSERT_TRUE(session->list_in_progress());
  const size_t tasks = script.tasks.size();
  session.reset();
  EXPECT_EQ(script.tasks.size(), tasks);  // nothing ran inside the destructor
  io.restart();
  io.run();
  ASSERT_EQ(script.tasks.size(), tasks + 1);
  EXPECT_TRUE(script.tasks.back().has_list_row());
  EXPECT_TRUE(script.tasks.back().list_row().row().empty());
  EXPECT_EQ(script.leases_released, 1);
}

// A list function that takes its time after its last row: a reset in the middle of the list
// (CouchDB's, when the list's HTTP client went away) is answered, and the next command served,
// while the list still runs; its worker is let go once the function returns.
TEST(AsyncQuerySessionTest, AResetInAListDoesNotWaitForTheListToEnd) {
  asio::io_context io;
  asio::steady_timer list_returns(io, asio::steady_timer::time_point::max());
  Script script;
  script.on_run = [](const Task&) { return ReplyFromText(R"(design { reply: "[true,[]]" })"); };
  // Answers list_start at once; the end of rows only once list_returns is cancelled.
  class SlowToEnd final : public pool::AsyncTaskRunner {
   public:
    SlowToEnd(Script& script, asio::steady_timer& list_returns)
        : script_(script), list_returns_(list_returns) {}
    asio::awaitable<absl::StatusOr<Reply>> Run(Task task, absl::Time) override {
      co_return script_.Run(task);
    }
    asio::awaitable<std::vector<absl::StatusOr<Reply>>> RunAll(std::vector<Task>,
                                                               absl::Time) override {
      co_return std::vector<absl::StatusOr<Reply>>{};
    }
    asio::awaitable<absl::StatusOr<std::unique_ptr<pool::AsyncWorkerLease>>> Lease(
        absl::Time) override {
      ++script_.leases_taken;
      co_return std::make_unique<Held>(script_, list_returns_);
    }
    int size() const override { return 2; }

   private:
    class Held final : public pool::AsyncWorkerLease {
     public:
      Held(Script& script, asio::steady_timer& list_returns)
          : script_(script), list_returns_(list_returns) {}
      ~Held() override { ++script_.leases_released; }
      asio::awaitable<absl::StatusOr<Reply>> Exchange(Task task, absl::Time) override {
        script_.tasks.push_back(task);
        if (task.has_list_row()) {
          asio::error_code cancelled;
          co_await list_returns_.async_wait(asio::redirect_error(asio::use_awaitable, cancelled));
        }
        Reply reply;
        reply.mutable_list_step()->set_reply(R"(["start",[],{"headers":{}}])");
        reply.mutable_list_step()->set_done(task.has_list_row());
        co_return reply;
      }

     private:
      Script& script_;
      asio::steady_timer& list_returns_;
    };
    Script& script_;
    asio::steady_timer& list_returns_;
  } runner(script, list_returns);
  AsyncQuerySession session(runner);
  std::vector<std::optional<v1::SessionOutput>> answers;
  auto handle = [&](std::string line) {
    asio::co_spawn(
        io,
        [&session, &answers, line]() -> asio::awaitable<void> {
          answers.push_back(co_await session.Handle(line));
        },
        [](std::exception_ptr error) {
          if (error) std::rethrow_exception(error);
        });
    // What is ready to run, not what waits for the list's end (that never comes here).
    io.restart();
    io.poll();
  };
  handle(kDesignDoc);
  handle(R"(["ddoc","_design/d",["lists","rows"],[{},{}]])");
  ASSERT_TRUE(session.list_in_progress());
  handle(R"(["reset",{}])");
  ASSERT_EQ(answers.size(), 3u);
  EXPECT_FALSE(answers[2].has_value());  // a reset: answered `true` by the adapter
  EXPECT_FALSE(session.list_in_progress());
  ASSERT_TRUE(script.tasks.back().has_list_row());  // the list has its end of rows
  EXPECT_EQ(script.leases_released, 0);             // and still runs
  handle(R"(["ddoc","_design/d",["filters","by_town"],[[],{}]])");
  ASSERT_EQ(answers.size(), 4u);
  EXPECT_THAT(LinesOf(answers[3]), ElementsAre("[true,[]]"));
  EXPECT_EQ(script.leases_released, 0);
  list_returns.cancel();  // the list function returns: its worker is let go
  io.restart();
  io.run();
  EXPECT_EQ(script.leases_released, 1);
}

}  // namespace
}  // namespace cnp::couchdb
