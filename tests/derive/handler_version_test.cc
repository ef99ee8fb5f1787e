// `cnp derive` and a handler decorated with @version. Named without its version, every Map call
// would fail with a version mismatch: the run is refused before it writes anything. Its version
// changed on disk while the run goes on (cnp-server reloads it): the service answers
// FAILED_PRECONDITION, which ends the run with the service's message. (It was taken for a lost
// lease: the run took the lease again and again, for ever, even with --once.)
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
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

std::string Handler(int version) {
  return absl::StrCat("from couch_named_python import version\n\n\n@version(", version,
                      ")\ndef town(doc):\n    yield doc.get(\"town\"), 1\n");
}

class HandlerVersionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("version");
    testing::WriteFile(dir_ + "/verfns.py", Handler(1));
    // A worker per call: the one that maps has not imported the handler before (a worker keeps
    // the version it imported, as couch_named_python did), as after a restart or a recycling.
    auto service = testing::ServerProcess::Start({"--python-path=" + dir_, "--workers=1", "--max-calls-per-worker=1"});
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = *std::move(service);
  }

  // A CouchDB with one change in `src`; `on_changes` runs before the changes are answered.
  ScriptedHttpServer::Handler Couch(std::function<void()> on_changes) {
    return [this, on_changes](const HttpRequest& r) -> ScriptedResponse {
      const std::string& t = r.target;
      if (t == "/") return {200, R"({"couchdb":"Welcome","version":"3.4.3"})"};
      if (t == "/src") return {200, R"({"db_name":"src","update_seq":"1-g1AA"})"};
      if (t == "/tgt" && r.method == "PUT") return {412, R"({"error":"file_exists"})"};
      if (absl::StartsWith(t, "/tgt/_local/cnp-derive%3Av%3Alease")) {
        return r.method == "GET" ? ScriptedResponse{404, R"({"error":"not_found"})"}
                                 : ScriptedResponse{201, R"({"ok":true,"id":"_local/cnp-derive:v:lease","rev":"0-1"})"};
      }
      if (r.method == "GET" && absl::StartsWith(t, "/tgt/_local/")) return {404, R"({"error":"not_found"})"};
      // The claim on src -> tgt (Deriver::ClaimStage), written once.
      if (r.method == "PUT" && t == "/tgt/_local/cnp-derive-claim%3Asrc") {
        return {201, R"({"ok":true,"id":"_local/cnp-derive-claim:src","rev":"0-1"})"};
      }
      // The source's marker (which database it is), written once.
      if (t == "/src/_local/cnp-derive-source") {
        return r.method == "GET" ? ScriptedResponse{404, R"({"error":"not_found"})"}
                                 : ScriptedResponse{201, R"({"ok":true,"id":"_local/cnp-derive-source","rev":"0-1"})"};
      }
      // The status document says how the run ended; no derived row, checkpoint or error is written.
      if (r.method == "PUT" && t == "/tgt/_local/cnp-derive%3Av%3Astatus") {
        return {201, R"({"ok":true,"id":"_local/cnp-derive:v:status","rev":"0-1"})"};
      }
      if (absl::StartsWith(t, "/tgt/_all_docs")) return {200, R"({"rows":[]})"};
      if (absl::StartsWith(t, "/src/_changes?")) {
        on_changes();
        return {200, R"({"results":[{"seq":"1-g1AA","id":"a","changes":[{"rev":"1-x"}],)"
                     R"("doc":{"_id":"a","_rev":"1-x","town":"Oslo"}}],"last_seq":"1-g1AA","pending":0})"};
      }
      absl::MutexLock lock(&mu_);
      writes_.push_back(absl::StrCat(r.method, " ", t));
      return {500, R"({"error":"unscripted"})"};
    };
  }

  std::string Declare(const std::string& handler) {
    const std::string path = dir_ + "/derive.yml";
    testing::WriteFile(path, absl::StrCat("name: v\nhandlers:\n  tgt:\n    src: {type: map, version: 1, handler: \"",
                                          handler, "\"}\n"));
    return path;
  }

  std::string dir_;
  std::unique_ptr<testing::ServerProcess> service_;
  absl::Mutex mu_;
  std::vector<std::string> writes_ ABSL_GUARDED_BY(mu_);  // other than the lease's, status's and databases'
};

TEST_F(HandlerVersionTest, AVersionedHandlerNamedWithoutItsVersionIsRefusedBeforeAnythingIsWritten) {
  ScriptedHttpServer couch(Couch([] {}));
  auto run = ChildProcess::Start({testing::Runfile("client/cli/cnp"), "derive", "--once",
                                  "--target=" + service_->target(), couch.url(), Declare("verfns.town")},
                                 dir_, "", kWait);
  ASSERT_TRUE(run.ok()) << run.status();
  std::optional<int> exit_code = (*run)->WaitForExitCode(kWait);
  ASSERT_TRUE(exit_code.has_value()) << "still running; it printed:\n" << (*run)->output();
  EXPECT_EQ(*exit_code, 2) << (*run)->output();
  EXPECT_THAT((*run)->output(), HasSubstr("it has @version(1), so every call would fail with a version mismatch: "
                                          "name it verfns.town|1; nothing was written"));
  for (const std::string& request : couch.requests()) {
    EXPECT_FALSE(absl::StartsWith(request, "PUT") || absl::StartsWith(request, "POST")) << request;
  }
}

TEST_F(HandlerVersionTest, AVersionChangedDuringTheRunEndsItWithTheServicesMessage) {
  // Version 2 on disk (a newer modification time, which the workers look at) once the run has
  // passed its checks and reads the changes: its Map call names version 1.
  ScriptedHttpServer couch(Couch([this] {
    testing::WriteFile(dir_ + "/verfns.py", Handler(2));
    std::filesystem::last_write_time(dir_ + "/verfns.py", std::filesystem::file_time_type::clock::now() +
                                                             std::chrono::seconds(5));
  }));
  auto run = ChildProcess::Start({testing::Runfile("client/cli/cnp"), "derive", "--once",
                                  "--target=" + service_->target(), couch.url(), Declare("verfns.town|1")},
                                 dir_, "", kWait);
  ASSERT_TRUE(run.ok()) << run.status();
  std::optional<int> exit_code = (*run)->WaitForExitCode(absl::Seconds(30));
  ASSERT_TRUE(exit_code.has_value()) << "still running; it printed:\n" << (*run)->output().substr(0, 2000);
  const std::string out = (*run)->output();
  EXPECT_EQ(*exit_code, 1) << out;
  EXPECT_THAT(out, HasSubstr("Loaded version 2 did not match expected version 1"));
  EXPECT_THAT(out, Not(HasSubstr("lost the lease")));
  EXPECT_THAT(out, Not(HasSubstr("caught up")));
  absl::MutexLock lock(&mu_);
  EXPECT_THAT(writes_, ::testing::IsEmpty());
}

// A worker that has version 1 loaded runs it for every call naming |1, whatever is on disk
// since (found by a probe: a deployed @version(2) ran on as 1, and the run failed later, when
// some worker imported the module anew). Each run asks for the handler's version on disk first.
TEST_F(HandlerVersionTest, AVersionChangedOnDiskIsFoundThoughAWorkerHasTheOldOneLoaded) {
  auto keeping = testing::ServerProcess::Start({"--python-path=" + dir_, "--workers=1"});
  ASSERT_TRUE(keeping.ok()) << keeping.status();
  const std::string cnp = testing::Runfile("client/cli/cnp");
  auto resolve = ChildProcess::Start({cnp, "resolve", "--target=" + (*keeping)->target(),
                                      "verfns.town|1"}, dir_, "", kWait);
  ASSERT_TRUE(resolve.ok()) << resolve.status();
  ASSERT_EQ((*resolve)->WaitForExitCode(kWait), 0) << (*resolve)->output();  // version 1 loaded
  testing::WriteFile(dir_ + "/verfns.py", Handler(2));
  std::filesystem::last_write_time(dir_ + "/verfns.py", std::filesystem::file_time_type::clock::now() +
                                                           std::chrono::seconds(5));
  ScriptedHttpServer couch(Couch([] {}));
  auto run = ChildProcess::Start({cnp, "derive", "--once", "--target=" + (*keeping)->target(),
                                  couch.url(), Declare("verfns.town|1")},
                                 dir_, "", kWait);
  ASSERT_TRUE(run.ok()) << run.status();
  std::optional<int> exit_code = (*run)->WaitForExitCode(kWait);
  ASSERT_TRUE(exit_code.has_value()) << "still running; it printed:\n" << (*run)->output();
  const std::string out = (*run)->output();
  EXPECT_EQ(*exit_code, 1) << out;
  EXPECT_THAT(out, HasSubstr("map handler verfns.town|1 (src -> tgt): the code on disk is now "
                             "@version(2); to derive with it, name the handler verfns.town|2 and "
                             "raise the stage's version"));
  for (const std::string& request : couch.requests()) {
    EXPECT_FALSE(absl::StartsWith(request, "PUT") || absl::StartsWith(request, "POST")) << request;
  }
}

}  // namespace
}  // namespace cnp::derive
