// What one authorized Session stream can hold: never a pool worker for longer than the server's
// --call-timeout, and a worker it keeps between its lines only until another call needs it.
// CouchDB's reset sets the timeout of the commands that follow, and a peer that
// sends ["reset",{"timeout":1e308}] used to run a function that never returns on a worker for
// ever; a list left waiting for CouchDB's next row used to hold its leased worker for as long
// as the stream stayed open. With --workers=N, N such streams starved every other call.
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/server_process.h"
#include "tests/support/session_stream.h"

namespace cnp {
namespace {

using ::cnp::testing::ServerProcess;
using ::cnp::testing::SessionStream;
using ::testing::HasSubstr;

constexpr absl::Duration kCallTimeout = absl::Seconds(2);
// How long the test waits for what must come within about kCallTimeout: far more, so a loaded
// machine does not fail it, and far less than "for ever".
constexpr absl::Duration kPatience = absl::Seconds(30);

std::unique_ptr<ServerProcess> StartOneWorkerServer() {
  return ServerProcess::StartWithFunctions(
      {"tests/functions/server"}, 1,
      {absl::StrCat("--call-timeout=", absl::FormatDuration(kCallTimeout))});
}

// A Validate call on a connection of its own: it needs the server's one worker.
absl::Status ValidateGetsThrough(const ServerProcess& server) {
  auto client = server.Connect();
  v1::ValidateRequest request;
  request.set_function("svc_fns.guard|3");
  request.set_new_doc(R"({"_id":"x"})");
  request.set_user_ctx(R"({"db":"db","name":"bob","roles":[]})");
  auto response = client->Validate(request, kPatience);
  if (!response.ok()) return response.status();
  if (response->outcome() != v1::ValidateResponse::OK) {
    return absl::InternalError(absl::StrCat("unexpected outcome ", response->outcome()));
  }
  return absl::OkStatus();
}


TEST(SessionHoldTest, AnEndlessResetTimeoutIsCappedAtTheCallTimeout) {
  auto server = StartOneWorkerServer();
  ASSERT_NE(server, nullptr);
  SessionStream session(*server, kPatience + absl::Seconds(15));
  ASSERT_TRUE(session.Send(R"(["reset",{"timeout":1e308}])"));  // answered by nothing
  ASSERT_TRUE(session.Send(R"(["add_fun","svc_fns.spins"])"));
  auto added = session.Read();
  ASSERT_TRUE(added.has_value()) << server->Log();
  ASSERT_EQ(added->back(), "true");

  const absl::Time sent = absl::Now();
  ASSERT_TRUE(session.Send(R"(["map_doc",{"_id":"a"}])"));
  auto answer = session.Read();
  const absl::Duration took = absl::Now() - sent;
  ASSERT_TRUE(answer.has_value()) << "the spinning map_doc was never answered\n" << server->Log();
  std::cerr << "a function that never returns, after a reset with timeout 1e308: answered in "
            << took << " (--call-timeout " << kCallTimeout << ")\n";
  EXPECT_THAT(answer->back(), HasSubstr(R"(["error","timeout",)"));
  EXPECT_GE(took, kCallTimeout - absl::Milliseconds(100));
  EXPECT_LT(took, kPatience);
  // The worker was replaced and serves again.
  EXPECT_TRUE(ValidateGetsThrough(*server).ok()) << server->Log();
}

TEST(SessionHoldTest, AListLeftWaitingForItsNextRowLetsItsWorkerGo) {
  auto server = StartOneWorkerServer();
  ASSERT_NE(server, nullptr);
  SessionStream session(*server, kPatience + absl::Seconds(15));
  ASSERT_TRUE(session.Send(R"(["ddoc","new","_design/x",{"lists":{"l":"svc_fns.listed"}}])"));
  auto taught = session.Read();
  ASSERT_TRUE(taught.has_value()) << server->Log();
  ASSERT_EQ(taught->back(), "true");
  ASSERT_TRUE(session.Send(R"(["ddoc","_design/x",["lists","l"],[{"total_rows":1,"offset":0},{}]])"));
  auto started = session.Read();
  ASSERT_TRUE(started.has_value()) << server->Log();
  ASSERT_THAT(started->back(), HasSubstr(R"(["start",["head"])"));

  // The stream now sits idle with the list holding the server's only worker, until the list
  // has run --call-timeout (all of it spent waiting for its next row) and is ended.
  const absl::Time idle_since = absl::Now();
  ASSERT_TRUE(server->WaitForLog("in all: ending it", kPatience))
      << "the idle list kept its worker\n" << server->Log();
  const absl::Duration idle = absl::Now() - idle_since;
  std::cerr << "a list left waiting for its next row ended after " << idle
            << " (--call-timeout " << kCallTimeout << ")\n";
  EXPECT_GE(idle, kCallTimeout - absl::Milliseconds(100));
  // Its worker is back in the pool: a call that needs it is served.
  const absl::Status validated = ValidateGetsThrough(*server);
  EXPECT_TRUE(validated.ok()) << validated << "\n" << server->Log();

  // CouchDB's row that comes late is answered as a command that ran out of time is, which
  // fails CouchDB's request; the session goes on.
  auto late = session.Ask(R"(["list_row",{"id":"a","key":1,"value":null}])");
  ASSERT_TRUE(late.has_value()) << server->Log();
  ASSERT_EQ(late->size(), 1u);
  EXPECT_THAT(late->back(),
              HasSubstr(R"(["error","timeout","cnp-server: the list ran for 2s in all)"));
  auto added = session.Ask(R"(["add_fun","svc_fns.doubled"])");
  ASSERT_TRUE(added.has_value()) << server->Log();
  EXPECT_EQ(added->back(), "true");
}

// A list CouchDB feeds rows a little faster than the idle limit (a slow HTTP client reading a
// _list response paces them) still holds its worker for at most --call-timeout in all. Before,
// the idle timer started again at every row and nothing bounded the whole list: --workers such
// streams starved every other call for as long as they dripped rows.
TEST(SessionHoldTest, AListFedRowsSlowlyEndsAfterTheCallTimeoutInAll) {
  auto server = StartOneWorkerServer();
  ASSERT_NE(server, nullptr);
  SessionStream session(*server, kPatience + absl::Seconds(15));
  auto taught = session.Ask(R"(["ddoc","new","_design/x",{"lists":{"l":"svc_fns.listed"}}])");
  ASSERT_TRUE(taught.has_value()) << server->Log();
  ASSERT_EQ(taught->back(), "true");
  const absl::Time list_started = absl::Now();
  auto started =
      session.Ask(R"(["ddoc","_design/x",["lists","l"],[{"total_rows":1,"offset":0},{}]])");
  ASSERT_TRUE(started.has_value()) << server->Log();
  ASSERT_THAT(started->back(), HasSubstr(R"(["start",["head"])"));

  // A row every quarter of the idle limit (the wait for the server's log line paces them),
  // until the server ends the list: between two rows (the log line), or during one (its answer).
  bool ended_between_rows = false;
  bool ended_in_a_row = false;
  int rows = 0;
  while (absl::Now() - list_started < kPatience) {
    if (server->WaitForLog("in all: ending it", kCallTimeout / 4)) {
      ended_between_rows = true;
      break;
    }
    auto answer = session.Ask(
        absl::StrCat(R"(["list_row",{"id":"r)", rows, R"(","key":1,"value":null}])"));
    ASSERT_TRUE(answer.has_value()) << server->Log();
    ++rows;
    if (absl::StrContains(answer->back(), R"(["error","timeout",)")) {
      ended_in_a_row = true;
      break;
    }
    ASSERT_THAT(answer->back(), HasSubstr(R"(["chunks",)"));
  }
  const absl::Duration held = absl::Now() - list_started;
  ASSERT_TRUE(ended_between_rows || ended_in_a_row)
      << "a list fed " << rows << " rows held the only worker for " << held << "\n"
      << server->Log();
  std::cerr << "a list fed a row every " << kCallTimeout / 4 << " ended after " << held << " ("
            << rows << " rows; --call-timeout " << kCallTimeout << ")\n";
  EXPECT_GE(held, kCallTimeout - absl::Milliseconds(100));
  EXPECT_GE(rows, 3);  // the rows did come faster than the idle limit
  // Its worker serves others.
  const absl::Status validated = ValidateGetsThrough(*server);
  EXPECT_TRUE(validated.ok()) << validated << "\n" << server->Log();
  if (ended_between_rows) {
    // The next row is answered as a command that ran out of time is on this path.
    auto late = session.Ask(R"(["list_row",{"id":"late","key":1,"value":null}])");
    ASSERT_TRUE(late.has_value()) << server->Log();
    ASSERT_EQ(late->size(), 1u);
    EXPECT_THAT(late->back(), HasSubstr(R"(["error","timeout","cnp-server: the list ran for )"));
  }
  // The session goes on.
  auto added = session.Ask(R"(["add_fun","svc_fns.doubled"])");
  ASSERT_TRUE(added.has_value()) << server->Log();
  EXPECT_EQ(added->back(), "true");
}

// A stream in lockstep keeps the worker that answered its line (the remote Session's per-line
// cost); with --workers=1 that is the only one. A call that needs it gets it while the stream
// sits between lines, and the stream goes on with the worker it gets next. (That the worker is
// kept at all is the pool's tests' to show: KeptWorkerTest in tests/pool.)
TEST(SessionHoldTest, AWorkerKeptBetweenLinesGoesToAnotherCallThatNeedsIt) {
  auto server = StartOneWorkerServer();
  ASSERT_NE(server, nullptr);
  SessionStream session(*server, kPatience + absl::Seconds(15));
  ASSERT_TRUE(session.Send(R"(["reset",{}])"));
  auto added = session.Ask(R"(["add_fun","svc_fns.doubled"])");
  ASSERT_TRUE(added.has_value()) << server->Log();
  ASSERT_EQ(added->back(), "true");
  for (int n = 1; n <= 3; ++n) {
    auto mapped = session.Ask(absl::StrCat(R"(["map_doc",{"_id":"d)", n, R"(","n":)", n, "}]"));
    ASSERT_TRUE(mapped.has_value()) << server->Log();
    EXPECT_EQ(mapped->back(), absl::StrCat(R"([[["d)", n, R"(",)", 2 * n, "]]]"));
  }
  // The stream now sits between lines with the worker.
  const absl::Time asked = absl::Now();
  EXPECT_TRUE(ValidateGetsThrough(*server).ok()) << server->Log();
  std::cerr << "a Validate while a Session stream kept the only worker: answered in "
            << absl::Now() - asked << "\n";
  auto after = session.Ask(R"(["map_doc",{"_id":"e","n":5}])");
  ASSERT_TRUE(after.has_value()) << server->Log();
  EXPECT_EQ(after->back(), R"([[["e",10]]])");
  EXPECT_TRUE(ValidateGetsThrough(*server).ok()) << server->Log();
}

}  // namespace
}  // namespace cnp
