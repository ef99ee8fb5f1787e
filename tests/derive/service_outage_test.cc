// `cnp derive --once` when cnp-server goes away in the middle of the run: it tries again (from
// the checkpoints) for --service-wait, then exits 1 saying so, having recorded nothing as
// failed. The CouchDB is scripted so that the test can stop cnp-server between the command's
// connecting to it and its first Map call: the _changes answer waits for the test.
#include <signal.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/child_process.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"
#include "tests/support/scripted_http_server.h"
#include "tests/support/server_process.h"

namespace cnp::derive {
namespace {

using ::cnp::testing::ChildProcess;
using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kWait = absl::Seconds(60);

TEST(ServiceOutageTest, OnceTriesAgainForTheServiceWaitThenExitsOneRecordingNothing) {
  absl::Notification changes_asked, service_stopped;
  absl::Mutex mu;
  std::vector<std::string> writes;  // PUTs and POSTs other than the lease's, the databases' and the source's marker
  ScriptedHttpServer couch([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string& t = r.target;
    if (t == "/") return {200, R"({"couchdb":"Welcome","version":"3.4.3"})"};
    if (t == "/src") return {200, R"({"db_name":"src","update_seq":"1-g1AA"})"};
    if (t == "/tgt" && r.method == "PUT") return {412, R"({"error":"file_exists"})"};
    if (t == "/tgt/_local/cnp-derive%3Ao%3Alease") {
      return r.method == "PUT" ? ScriptedResponse{201, R"({"ok":true,"id":"_local/cnp-derive:o:lease","rev":"0-1"})"}
                               : ScriptedResponse{404, R"({"error":"not_found"})"};
    }
    if (r.method == "GET" && absl::StartsWith(t, "/tgt/_local/")) return {404, R"({"error":"not_found"})"};
    // The claim on src -> tgt (Deriver::ClaimStage), written once.
    if (r.method == "PUT" && t == "/tgt/_local/cnp-derive-claim%3Asrc") {
      return {201, R"({"ok":true,"id":"_local/cnp-derive-claim:src","rev":"0-1"})"};
    }
    // The source's marker (which database it is), written once.
    if (t == "/src/_local/cnp-derive-source") {
      return r.method == "PUT" ? ScriptedResponse{201, R"({"ok":true,"id":"_local/cnp-derive-source","rev":"0-1"})"}
                               : ScriptedResponse{404, R"({"error":"not_found"})"};
    }
    if (absl::StartsWith(t, "/tgt/_all_docs")) return {200, R"({"rows":[]})"};
    if (absl::StartsWith(t, "/src/_changes?")) {
      if (!changes_asked.HasBeenNotified()) changes_asked.Notify();
      service_stopped.WaitForNotification();
      return {200, R"({"results":[{"seq":"1-g1AA","id":"a","changes":[{"rev":"1-x"}],)"
                   R"("doc":{"_id":"a","_rev":"1-x","town":"Oslo"}}],"last_seq":"1-g1AA","pending":0})"};
    }
    absl::MutexLock lock(&mu);
    writes.push_back(absl::StrCat(r.method, " ", t));
    return {500, R"({"error":"unscripted"})"};
  });
  auto service = testing::ServerProcess::Start({"--python-path=" + testing::Runfile("tests/derive/pyfns"), "--workers=1"});
  ASSERT_TRUE(service.ok()) << service.status();
  const std::string dir = testing::MakeTempDir("outage");
  const std::string declaration = dir + "/derive.yml";
  testing::WriteFile(declaration, "name: o\nhandlers:\n  tgt:\n    src: {type: map, version: 1, handler: derive_fns.town}\n");

  auto run = ChildProcess::Start({testing::Runfile("client/cli/cnp"), "derive", "--once", "--service-wait=1s",
                                  "--target=" + (*service)->target(), couch.url(), declaration},
                                 dir, "holding the lease", kWait);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE(changes_asked.WaitForNotificationWithTimeout(kWait));
  (*service)->Signal(SIGTERM);
  (*service)->WaitForExit();
  service_stopped.Notify();

  std::optional<int> exit_code = (*run)->WaitForExitCode(kWait);
  ASSERT_TRUE(exit_code.has_value()) << "still running; it printed:\n" << (*run)->output();
  EXPECT_EQ(*exit_code, 1) << (*run)->output();
  const std::string out = (*run)->output();
  EXPECT_THAT(out, HasSubstr("trying again from the checkpoints in 100ms"));
  EXPECT_THAT(out, HasSubstr("no cnp-server answers at "));
  EXPECT_THAT(out, HasSubstr("(--service-wait); a later run goes on from the checkpoints"));
  EXPECT_THAT(out, Not(HasSubstr("caught up")));
  // More than one try (each reads the changes again from the checkpoint), and nothing
  // written: no rows, no checkpoint, no error recorded.
  size_t reads = 0;
  for (const std::string& request : couch.requests()) reads += absl::StrContains(request, "/src/_changes?since=0&");
  EXPECT_GE(reads, 2u);
  absl::MutexLock lock(&mu);
  EXPECT_THAT(writes, ::testing::IsEmpty());
}

// Found by a review: a cnp-server not answering yet when the run started (a unit started with
// the server's, a restart) ended the run at once, where --help says such a server stops the
// work, not the run. It is waited for, --once for --service-wait, and nothing is written.
TEST(ServiceOutageTest, AServiceDownAtTheStartIsWaitedForNotTheEnd) {
  ScriptedHttpServer couch([&](const HttpRequest& r) -> ScriptedResponse {
    if (r.target == "/") return {200, R"({"couchdb":"Welcome","version":"3.4.3"})"};
    return {500, R"({"error":"unscripted"})"};
  });
  const std::string dir = testing::MakeTempDir("outage-start");
  const std::string declaration = dir + "/derive.yml";
  testing::WriteFile(declaration, "name: o\nhandlers:\n  tgt:\n    src: {type: map, version: 1, handler: derive_fns.town}\n");
  const absl::Time started = absl::Now();
  auto run = ChildProcess::Start({testing::Runfile("client/cli/cnp"), "derive", "--once", "--service-wait=3s",
                                  "--target=unix:" + dir + "/cnp.sock", couch.url(), declaration},
                                 dir, "", kWait);
  ASSERT_TRUE(run.ok()) << run.status();
  std::optional<int> exit_code = (*run)->WaitForExitCode(kWait);
  ASSERT_TRUE(exit_code.has_value()) << "still running; it printed:\n" << (*run)->output();
  EXPECT_EQ(*exit_code, 1) << (*run)->output();
  const absl::Duration took = absl::Now() - started;
  EXPECT_GE(took, absl::Seconds(3)) << (*run)->output();
  // Found by a probe: the first try's wait did not count, and the run took twice the wait (6.1 s
  // here). The bound tells that from the wait with 2 s to spare.
  EXPECT_LT(took, absl::Seconds(5)) << (*run)->output();
  const std::string out = (*run)->output();
  EXPECT_THAT(out, HasSubstr("it has not answered for 3"));
  EXPECT_THAT(out, HasSubstr("(--service-wait)"));
  for (const std::string& request : couch.requests()) EXPECT_THAT(request, Not(HasSubstr("PUT"))) << request;
}

// Found by a probe: a cnp-server that refused the run (no token given, where it asks for one)
// was taken for one not up yet; with no change to map, `--once` said "caught up" and exited 0
// at every run of a cron job. It ends the run before anything is written.
TEST(ServiceOutageTest, AServiceThatRefusesTheRunEndsItBeforeAnythingIsWritten) {
  ScriptedHttpServer couch([&](const HttpRequest& r) -> ScriptedResponse {
    if (r.target == "/") return {200, R"({"couchdb":"Welcome","version":"3.4.3"})"};
    if (r.target == "/src") return {200, R"({"db_name":"src","update_seq":"0"})"};
    return {500, R"({"error":"unscripted"})"};
  });
  const std::string dir = testing::MakeTempDir("outage-refused");
  testing::WriteFile(dir + "/token", "t0ken-the-run-lacks\n", 0600);
  // On loopback: unix-socket peers need no token.
  auto service = testing::ServerProcess::Launch(
      {.args = {"--python-path=" + testing::Runfile("tests/derive/pyfns"), "--workers=1",
                "--listen=127.0.0.1:0", "--auth-token-file=" + dir + "/token"},
       .fresh_socket = false});
  ASSERT_TRUE(service->ready()) << service->Log();
  const std::string declaration = dir + "/derive.yml";
  testing::WriteFile(declaration, "name: o\nhandlers:\n  tgt:\n    src: {type: map, version: 1, handler: derive_fns.town}\n");
  auto run = ChildProcess::Start({testing::Runfile("client/cli/cnp"), "derive", "--once", "--service-wait=1s",
                                  absl::StrCat("--target=127.0.0.1:", service->Port()), couch.url(), declaration},
                                 dir, "", kWait);
  ASSERT_TRUE(run.ok()) << run.status();
  std::optional<int> exit_code = (*run)->WaitForExitCode(kWait);
  ASSERT_TRUE(exit_code.has_value()) << "still running; it printed:\n" << (*run)->output();
  const std::string out = (*run)->output();
  EXPECT_EQ(*exit_code, 1) << out;
  EXPECT_THAT(out, HasSubstr("checking the handlers with cnp-server: "));
  EXPECT_THAT(out, HasSubstr("; nothing was written"));
  EXPECT_THAT(out, Not(HasSubstr("caught up")));
  for (const std::string& request : couch.requests()) {
    EXPECT_FALSE(absl::StartsWith(request, "PUT") || absl::StartsWith(request, "POST")) << request;
  }
}

}  // namespace
}  // namespace cnp::derive
