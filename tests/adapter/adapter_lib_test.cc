// The adapter's own small pieces: the session state it replays to a new stream (commands are read
// by the protocol library: tests/couchdb/command_test.cc; CouchDB's lines by common/couchdb's
// LineReader: tests/common/couchdb/line_io_test.cc).
#include <string>

#include "adapter/service_connection.h"
#include "adapter/service_launcher.h"
#include "adapter/session_state.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp::adapter {
namespace {

using ::testing::ElementsAre;
using couchdb::CommandKind;

TEST(SessionStateTest, ReplaysResetLibAndFunctionsAndKeepsDesignDocsById) {
  SessionState state;
  state.OnAccepted(CommandKind::kDesignDocNew, R"(["ddoc","new","_design/a",{"rev":1}])");
  state.OnReset(R"(["reset",{"reduce_limit":true,"timeout":12000}])");
  state.OnAccepted(CommandKind::kAddLib, R"(["add_lib",{"x":1}])");
  state.OnAccepted(CommandKind::kAddFun, R"(["add_fun","m.f|1"])");
  state.OnAccepted(CommandKind::kAddFun, R"(["add_fun","m.g"])");
  state.OnAccepted(CommandKind::kDesignDocNew, R"(["ddoc","new","_design/b",{}])");
  state.OnAccepted(CommandKind::kDesignDocNew,
                   R"(["ddoc","new","_design/a",{"rev":2,"shows":{"s":"m.s"}}])");
  // Design documents are taught to a new stream when a command names them, not replayed.
  EXPECT_THAT(state.ReplayLines(),
              ElementsAre(R"(["reset",{"reduce_limit":true,"timeout":12000}])",
                          R"(["add_lib",{"x":1}])", R"(["add_fun","m.f|1"])",
                          R"(["add_fun","m.g"])"));
  EXPECT_EQ(state.design_doc_count(), 2);
  ASSERT_NE(state.DesignDocLine("_design/a"), nullptr);
  EXPECT_EQ(*state.DesignDocLine("_design/a"),
            R"(["ddoc","new","_design/a",{"shows":{"s":"m.s"}}])");
  ASSERT_NE(state.DesignDocLine("_design/b"), nullptr);
  EXPECT_EQ(*state.DesignDocLine("_design/b"), R"(["ddoc","new","_design/b",{}])");
  EXPECT_EQ(state.DesignDocLine("_design/c"), nullptr);
  EXPECT_EQ(state.couchdb_timeout(), absl::Seconds(12));
}

// A probe: add_fun lines padded with spaces (or carrying arguments the service ignores) were
// kept whole for replay, 40 of 10 MB taking a stream-path adapter to 212 MB. A function is kept
// as its name.
TEST(SessionStateTest, AFunctionIsKeptAsItsNameAlone) {
  SessionState state;
  state.OnAccepted(CommandKind::kAddFun, absl::StrCat(R"(["add_fun", "m.f|1")",
                                                      std::string(1 << 20, ' '), R"(,"extra"])"));
  state.OnAccepted(CommandKind::kAddFun, R"(["add_fun","m.\u0067"])");
  EXPECT_THAT(state.ReplayLines(), ElementsAre(R"(["add_fun","m.f|1"])", R"(["add_fun","m.g"])"));
}

TEST(SessionStateTest, ResetForgetsFunctionsAndLibButKeepsDesignDocs) {
  SessionState state;
  state.OnAccepted(CommandKind::kDesignDocNew, R"(["ddoc","new","_design/a",{}])");
  state.OnAccepted(CommandKind::kAddLib, R"(["add_lib",{}])");
  state.OnAccepted(CommandKind::kAddFun, R"(["add_fun","m.f"])");
  state.OnReset(R"(["reset"])");
  EXPECT_THAT(state.ReplayLines(), ElementsAre(R"(["reset"])"));
  EXPECT_NE(state.DesignDocLine("_design/a"), nullptr);
  EXPECT_EQ(state.couchdb_timeout(), absl::Seconds(5));
}

// A probe teaching a stream-path adapter design document after design document took it to
// 688 MB (the service keeps at most 64 MiB for the session): what it keeps is bounded as the
// service's own, least recently taught or used first out.
TEST(SessionStateTest, DesignDocsAreBoundedLeastRecentlyUsedFirstOut) {
  auto teach = [](absl::string_view id) {
    return absl::StrCat(R"(["ddoc","new",")", id, R"(",{"views":{"v":{"map":"m.)",
                        std::string(100, 'f'), R"("}}}])");
  };
  SessionState one(1 << 20);
  one.OnAccepted(CommandKind::kDesignDocNew, teach("_design/a"));
  ASSERT_NE(one.DesignDocLine("_design/a"), nullptr);
  // Room for three such documents.
  const size_t each = one.design_doc_bytes();
  SessionState bounded(3 * each);
  for (const char* id : {"_design/a", "_design/b", "_design/c"}) {
    bounded.OnAccepted(CommandKind::kDesignDocNew, teach(id));
  }
  EXPECT_EQ(bounded.design_doc_count(), 3);
  ASSERT_NE(bounded.DesignDocLine("_design/a"), nullptr);  // used: b is now the oldest
  bounded.OnAccepted(CommandKind::kDesignDocNew, teach("_design/d"));
  EXPECT_EQ(bounded.design_doc_count(), 3);
  EXPECT_LE(bounded.design_doc_bytes(), 3 * each);
  EXPECT_EQ(bounded.DesignDocLine("_design/b"), nullptr);
  EXPECT_NE(bounded.DesignDocLine("_design/a"), nullptr);
  EXPECT_NE(bounded.DesignDocLine("_design/c"), nullptr);
  EXPECT_NE(bounded.DesignDocLine("_design/d"), nullptr);
  // A new revision replaces the old one's bytes rather than adding to them.
  bounded.OnAccepted(CommandKind::kDesignDocNew, teach("_design/d"));
  EXPECT_EQ(bounded.design_doc_count(), 3);
  // One alone over the bound is not kept, and costs the others nothing.
  SessionState small(each - 1);
  small.OnAccepted(CommandKind::kDesignDocNew, teach("_design/a"));
  EXPECT_EQ(small.design_doc_count(), 0);
  EXPECT_EQ(small.design_doc_bytes(), 0);
}

TEST(SessionStateTest, AResetWithoutATimeoutMeansTheDefaultAsForTheService) {
  // The service replaces its configuration with each reset; an adapter that kept the older
  // timeout gave up on a service still working, blaming it as frozen.
  SessionState state;
  state.OnReset(R"(["reset",{"timeout":1000}])");
  EXPECT_EQ(state.couchdb_timeout(), absl::Seconds(1));
  state.OnReset(R"(["reset",{"reduce_limit":true}])");
  EXPECT_EQ(state.couchdb_timeout(), absl::Seconds(5));
  state.OnReset(R"(["reset",{"timeout":1000}])");
  state.OnReset(R"(["reset"])");
  EXPECT_EQ(state.couchdb_timeout(), absl::Seconds(5));
}

TEST(SessionStateTest, ReadsTheResetAndDesignDocIdsAsTheServiceDoes) {
  SessionState state;
  // Only the configuration's own "timeout" counts, not a key of that name deeper in it.
  state.OnReset(R"(["reset",{"reduce_limit":{"timeout":1}}])");
  EXPECT_EQ(state.couchdb_timeout(), absl::Seconds(5));
  state.OnReset(R"(["reset",{"timeout":2500.0}])");
  EXPECT_EQ(state.couchdb_timeout(), absl::Milliseconds(2500));
  // One design document, however its id is escaped: the newer line replaces the older.
  state.OnAccepted(CommandKind::kDesignDocNew,
                   R"(["ddoc","new","_design/a",{"validate_doc_update":"m.v|1"}])");
  state.OnAccepted(CommandKind::kDesignDocNew,
                   R"(["ddoc","new","_design\/a",{"validate_doc_update":"m.v|2"}])");
  EXPECT_EQ(state.design_doc_count(), 1);
  ASSERT_NE(state.DesignDocLine("_design/a"), nullptr);
  EXPECT_EQ(*state.DesignDocLine("_design/a"),
            R"(["ddoc","new","_design/a",{"validate_doc_update":"m.v|2"}])");
}

// The adapter keeps of a design document what the service keeps, its functions: 12 `ddoc new`
// lines of 40 MB (data beside one view) took an adapter to 629 MB kept for replay.
TEST(SessionStateTest, KeepsADesignDocumentsFunctionsNotItsData) {
  SessionState state;
  const std::string data(1 << 20, 'x');
  state.OnAccepted(CommandKind::kDesignDocNew,
                   R"(["ddoc","new","_design\u002fa",{"_id":"_design/a","notes":")" + data +
                       R"(","views":{"v":{"map":"m.map","options":[")" + data +
                       R"("]}},"x":[0,0,0],"filters":{"f\"q":"m.f"}}])");
  ASSERT_NE(state.DesignDocLine("_design/a"), nullptr);
  EXPECT_EQ(*state.DesignDocLine("_design/a"), R"(["ddoc","new","_design/a",)"
                                               R"({"views":{"v":{"map":"m.map"}},)"
                                               R"("filters":{"f\"q":"m.f"}}])");
}

// The typed `accepted` first; from a server older than it, the old rule: `true`, after nothing
// but log lines, to a line that teaches the session. (The failover this feeds:
// old_server_failover_test.py.)
TEST(ReplyTaughtSessionTest, AcceptedOrATrueFromAServerWithoutTheField) {
  v1::SessionOutput accepted;
  accepted.add_lines("true");
  accepted.set_accepted(true);
  v1::SessionOutput old_true;
  old_true.add_lines("true");
  v1::SessionOutput refused;
  refused.add_lines(R"(["error","compilation_error","no such function"])");
  EXPECT_TRUE(ReplyTaughtSession(CommandKind::kAddFun, accepted));
  for (CommandKind kind : {CommandKind::kAddLib, CommandKind::kAddFun, CommandKind::kDesignDocNew}) {
    EXPECT_TRUE(ReplyTaughtSession(kind, old_true));
    EXPECT_FALSE(ReplyTaughtSession(kind, refused));
  }
  // `true` answers other commands too (a filter, a validate): those teach nothing.
  EXPECT_FALSE(ReplyTaughtSession(CommandKind::kMapDoc, old_true));
  v1::SessionOutput ending = old_true;
  ending.set_exit(true);
  EXPECT_FALSE(ReplyTaughtSession(CommandKind::kAddFun, ending));
  v1::SessionOutput two_lines = old_true;
  two_lines.add_lines("true");
  EXPECT_FALSE(ReplyTaughtSession(CommandKind::kAddFun, two_lines));
  // A module that logs as it is imported: the old server sent its log lines, then `true`
  // (adapter review finding: the function was left out of the replay after a failover).
  v1::SessionOutput logged;
  logged.add_lines(R"(["log","loading the views"])");
  logged.add_lines("true");
  EXPECT_TRUE(ReplyTaughtSession(CommandKind::kAddFun, logged));
  v1::SessionOutput logged_then_refused;
  logged_then_refused.add_lines(R"(["log","loading the views"])");
  logged_then_refused.add_lines(R"(["error","compilation_error","no such function"])");
  EXPECT_FALSE(ReplyTaughtSession(CommandKind::kAddFun, logged_then_refused));
}

TEST(FindServerBinaryTest, AnExplicitBinaryWins) {
  LaunchOptions options;
  options.server_binary = "/opt/cnp/bin/cnp-server";
  EXPECT_EQ(FindServerBinary(options).value(), "/opt/cnp/bin/cnp-server");
}

}  // namespace
}  // namespace cnp::adapter
