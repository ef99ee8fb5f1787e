// The Uploader against a scripted CouchDB 3 for what pouchdb-server cannot show: a staged
// deploy's index build progress from _active_tasks (sharded databases), refusals and server
// errors.
#include <map>
#include <sstream>
#include <stop_token>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/cli/event_printer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/couchdb/design_diff.h"
#include "common/couchdb/json.h"
#include "service/upload/uploader.h"
#include "tests/support/scripted_http_server.h"
#include "tests/support/fake_blocking_task_runner.h"
#include "tests/upload/upload_events.h"

namespace cnp::upload::testing {

using ::cnp::testing::AsCouchDB;
using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;

namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

// What `cnp upload` prints for these events, stdout and stderr together in their order.
std::string Printed(const UploadResult& result) {
  std::ostringstream text;
  cli::UploadTally tally;
  for (const v1::UploadEvent& event : result.events) {
    cli::PrintEvent(event, {}, text, text, tally);
  }
  return text.str();
}

constexpr char kYaml[] =
    "location:\n"
    "    views:\n"
    "        towns:\n"
    "            map: myviews.townmap\n"
    "    validate_doc_update: myviews.validate\n";

constexpr char kStored[] =
    R"({"_id": "_design/location", "_rev": "1-live", "language": "python",
        "views": {"towns": {"map": "myviews.townmap|122"}},
        "validate_doc_update": "myviews.validate|21"})";

std::string IndexerTask(const std::string& database, const std::string& ddoc, int done,
                        int total) {
  return absl::StrCat(R"({"type": "indexer", "database": ")", database,
                      R"(", "design_document": ")", ddoc, R"(", "changes_done": )", done,
                      R"(, "total_changes": )", total, "}");
}

// GET /db/_design/x/_info's answer, as CouchDB 3.4 gives it (trimmed to what matters).
std::string IndexInfo(int update_seq, bool waiting_commit,
                      const std::string& signature = "5f1e") {
  return absl::StrCat(R"({"name": "location", "view_index": {"signature": ")", signature,
                      R"(", "language": )",
                      R"("python", "update_seq": )", update_seq, R"(, "waiting_commit": )",
                      waiting_commit ? "true" : "false", R"(, "updater_running": false}})");
}

// A CouchDB 3's answer to `call` ("METHOD target") in a staged deploy of kYaml over kStored in
// big, up to the build of the staging document's index; what a test is about (the indexes'
// _info, the clean-up, another _active_tasks) it answers before it asks this.
ScriptedResponse StagedDeployAnswer(const std::string& call) {
  if (call == "GET /big") return {200, "{}"};
  if (call == "GET /big/_design/location") return {200, kStored};
  if (call == "GET /big/_design/location__staging") return {404, "{}"};
  if (call == "PUT /big/_design/location__staging") return {201, R"({"rev": "1-stage"})"};
  if (absl::StartsWith(call, "GET /big/_design/location__staging/_view/")) return {200, "{}"};
  if (call == "GET /_active_tasks") return {200, "[]"};
  if (call == "PUT /big/_design/location") return {201, R"({"rev": "2-live"})"};
  return {500, "{}"};
}

class ScriptedCouchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runner_.Define("myviews.townmap", 123);
    runner_.Define("myviews.validate", 21);
    options_.staged_poll_interval = absl::ZeroDuration();
  }

  // An upload to `database` at a CouchDB where every database is missing: the one error it
  // reports. `url` is set to the CouchDB's.
  std::string UploadToMissing(const std::string& database, std::string& url) {
    ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest&) -> ScriptedResponse {
      return {404, R"({"error": "not_found", "reason": "Database does not exist."})"};
    }));
    url = couch.url();
    Uploader uploader(runner_, options_);
    v1::UploadRequest request = Request(couch.url());
    request.set_database(database);
    UploadResult result = RunUpload(uploader, request);
    EXPECT_THAT(result.errors(), SizeIs(1)) << result.Dump();
    return result.errors().empty() ? "" : result.errors()[0].message();
  }

  v1::UploadRequest Request(const std::string& url) {
    v1::UploadRequest request;
    request.set_couchdb_url(url);
    request.set_database("big");
    request.mutable_credentials()->set_username("admin");
    request.mutable_credentials()->set_password("pw");
    *request.add_files() = File("design.yml", kYaml);
    return request;
  }

  // options_ are read here, at the call: a test sets them before.
  UploadResult StagedUpload(const ScriptedHttpServer& couch) {
    v1::UploadRequest request = Request(couch.url());
    request.set_staged(true);
    Uploader uploader(runner_, options_);
    return RunUpload(uploader, request);
  }

  ::cnp::testing::FakeBlockingTaskRunner runner_;
  Uploader::Options options_;
};

TEST_F(ScriptedCouchTest, StagedDeployReportsIndexProgressThenMovesIntoPlace) {
  int polls = 0;
  std::string staging_body, live_body;
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (call == "GET /big") return {200, R"({"db_name": "big"})"};
    if (call == "GET /big/_design/location") return {200, kStored};
    if (call == "GET /big/_design/location__staging") return {404, R"({"error":"not_found"})"};
    if (call == "PUT /big/_design/location__staging") {
      staging_body = r.body;
      return {201, R"({"ok": true, "id": "_design/location__staging", "rev": "1-stage"})"};
    }
    if (absl::StartsWith(call, "GET /big/_design/location__staging/_view/towns?limit=0")) {
      return {200, R"({"total_rows": 0, "offset": 0, "rows": []})"};
    }
    if (call == "GET /_active_tasks") {
      const std::string shard_a = "shards/00000000-7fffffff/big.1700000000";
      const std::string shard_b = "shards/80000000-ffffffff/big.1700000000";
      switch (polls++) {
        case 0:
          return {200, absl::StrCat(
                           "[", IndexerTask(shard_a, "_design/location__staging", 10, 100), ",",
                           IndexerTask(shard_b, "_design/location__staging", 30, 100), ",",
                           IndexerTask("shards/00000000-7fffffff/bigger.1", "_design/location__staging", 1, 1), ",",
                           IndexerTask(shard_a, "_design/other", 5, 5), ",",
                           R"({"type": "replication"}])")};
        case 1:
          return {200, absl::StrCat("[", IndexerTask(shard_b, "_design/location__staging", 90, 100), "]")};
        default:
          return {200, "[]"};
      }
    }
    if (call == "PUT /big/_design/location") {
      live_body = r.body;
      return {201, R"({"ok": true, "id": "_design/location", "rev": "2-live"})"};
    }
    if (call == "GET /big/_design/location__staging/_info" ||
        call == "GET /big/_design/location/_info") {
      return {200, IndexInfo(200, false)};
    }
    if (call == "DELETE /big/_design/location__staging?rev=1-stage") {
      return {200, R"({"ok": true})"};
    }
    return {500, absl::StrCat(R"({"error": "unexpected request", "reason": ")", call, "\"}")};
  }));

  UploadResult result = StagedUpload(couch);
  ASSERT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();

  std::vector<std::string> progress;
  for (const auto& e : result.events) {
    if (!e.has_progress()) continue;
    progress.push_back(absl::StrCat(e.progress().phase(), " ", e.progress().changes_done(), "/",
                                    e.progress().total_changes()));
  }
  EXPECT_THAT(progress,
              ElementsAre("staged 0/0", "building 40/200", "building 90/100", "built 0/0",
                          "settled 200/200", "cleaned 0/0"));
  v1::DesignDocOutcome outcome = result.Outcome("_design/location", "big");
  EXPECT_EQ(outcome.action(), v1::DesignDocOutcome::UPDATED);
  EXPECT_EQ(outcome.rev(), "2-live");

  // What the operator reads says what happened, in order: the index was built ahead, so
  // nothing is "rebuilt on the next query".
  const std::string printed = Printed(result);
  EXPECT_THAT(printed, HasSubstr("staged big/_design/location__staging: index built; writing "
                                 "the live design document\n"
                                 "design.yml:1:1: updated big/_design/location (rev 2-live)\n"));
  EXPECT_THAT(printed, HasSubstr("    index: built before the write, under "
                                 "_design/location__staging: towns\n"
                                 "staged big/_design/location__staging: the live index is "
                                 "committed at update_seq 200\n"
                                 "staged big/_design/location__staging: removed\n"));
  EXPECT_THAT(printed, Not(HasSubstr("query of any view")));
  EXPECT_THAT(printed, Not(HasSubstr("moving into place")));

  // The staging document carries exactly the live document's index inputs, and nothing that
  // would run on writes.
  absl::StatusOr<rapidjson::Document> staging = couchdb::ParseJson(staging_body);
  absl::StatusOr<rapidjson::Document> live = couchdb::ParseJson(live_body);
  ASSERT_TRUE(staging.ok() && live.ok());
  EXPECT_TRUE(couchdb::SameIndexInputs(*staging, *live));
  EXPECT_FALSE(staging->HasMember("validate_doc_update"));
  EXPECT_EQ(std::string((*live)["_rev"].GetString()), "1-live");
  EXPECT_EQ(std::string((*live)["views"]["towns"]["map"].GetString()), "myviews.townmap|123");

  EXPECT_THAT(couch.requests(),
              ElementsAre("GET /", "GET /big", "GET /big/_design/location",
                          "GET /big/_design/location__staging",
                          "PUT /big/_design/location__staging",
                          "GET /big/_design/location__staging/_view/towns?limit=0&update=lazy",
                          "GET /_active_tasks", "GET /_active_tasks", "GET /_active_tasks",
                          "GET /big/_design/location__staging/_view/towns?limit=0",
                          "GET /big/_design/location__staging/_info",
                          "PUT /big/_design/location", "GET /big/_design/location/_info",
                          "DELETE /big/_design/location__staging?rev=1-stage"));
}

// CouchDB 3.4.3 as the issue found it: the staging and the live document share one index;
// right after the build it is not yet committed ("waiting_commit": true) and deleting the
// staging document then shuts the index down, losing the build (the live _info shows
// update_seq 0 and the first query rebuilds it all). The server below behaves that way.
TEST_F(ScriptedCouchTest, StagedDeployDeletesTheStagingDocumentOnlyOnceTheIndexIsCommitted) {
  constexpr int kBuiltSeq = 3000;
  int uncommitted_polls_left = 3;  // _info answers with waiting_commit before the commit
  bool index_lost = false;
  absl::Mutex mu;
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    absl::MutexLock lock(&mu);
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (call == "GET /big/_design/location__staging/_info" ||
        call == "GET /big/_design/location/_info") {
      if (index_lost) return {200, IndexInfo(0, false)};
      bool waiting = uncommitted_polls_left > 0;
      if (waiting) --uncommitted_polls_left;
      return {200, IndexInfo(kBuiltSeq, waiting)};
    }
    if (call == "DELETE /big/_design/location__staging?rev=1-stage") {
      if (uncommitted_polls_left > 0) index_lost = true;
      return {200, "{}"};
    }
    return StagedDeployAnswer(call);
  }));
  UploadResult result = StagedUpload(couch);
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  EXPECT_THAT(result.warnings(), SizeIs(0)) << result.Dump();

  std::vector<std::string> progress;
  for (const auto& e : result.events) {
    if (!e.has_progress()) continue;
    progress.push_back(absl::StrCat(e.progress().phase(), " ", e.progress().changes_done(), "/",
                                    e.progress().total_changes()));
  }
  // Caught up at once: what is waited for is CouchDB's commit, and the phase says so.
  EXPECT_THAT(progress, ElementsAre("staged 0/0", "built 0/0", "committing 3000/3000",
                                    "committing 3000/3000", "settled 3000/3000", "cleaned 0/0"));
  EXPECT_THAT(Printed(result),
              HasSubstr("staged big/_design/location__staging: the live index is caught up "
                        "(update_seq 3000 of 3000); waiting for CouchDB to commit it "
                        "(\"waiting_commit\": true) before removing it\n"));
  {
    absl::MutexLock lock(&mu);
    EXPECT_FALSE(index_lost) << "the staging document was deleted before the commit";
  }
  std::vector<std::string> requests = couch.requests();
  ASSERT_THAT(requests, SizeIs(::testing::Ge(2u)));
  EXPECT_EQ(requests.back(), "DELETE /big/_design/location__staging?rev=1-stage");
  EXPECT_EQ(requests[requests.size() - 2], "GET /big/_design/location/_info");
}

// Found by a review: when the live document's write got no answer (cut off, a proxy's 502 or
// 504), the staging document was deleted at once, though the write may have been applied: the
// live document then shares the staged index, and deleting the staging document before the
// commit loses the build. It is kept, and the error says so and when to delete it.
TEST_F(ScriptedCouchTest, AStagingDocumentIsKeptWhenTheLiveWriteMayHaveBeenApplied) {
  for (const bool hang_up : {true, false}) {
    ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
      const std::string call = absl::StrCat(r.method, " ", r.target);
      if (absl::EndsWith(call, "/_info")) return {200, IndexInfo(3000, false)};
      if (call == "PUT /big/_design/location") {
        if (!hang_up) return {502, "<html>Bad Gateway</html>"};
        ScriptedResponse gone;
        gone.hang_up = true;
        return gone;
      }
      return StagedDeployAnswer(call);
    }));
    UploadResult result = StagedUpload(couch);
    ASSERT_FALSE(result.status.ok()) << result.Dump();
    EXPECT_THAT(result.status.message(), HasSubstr("_design/location__staging in big was kept"))
        << hang_up << " " << result.status;
    for (const std::string& call : couch.requests()) {
      EXPECT_FALSE(absl::StartsWith(call, "DELETE")) << hang_up << " " << call;
    }
  }
}

// Found by a review: a live _info without waiting_commit (a server that is not CouchDB 3, a
// proxy that reshaped it) was read as committed, and the staging document deleted with nothing
// to show the index was safe. It is kept, with a warning that says why.
TEST_F(ScriptedCouchTest, ALiveInfoWithoutWaitingCommitKeepsTheStagingDocument) {
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (call == "GET /big/_design/location/_info") {
      return {200, R"({"name": "location", "view_index": {"signature": "5f1e", "update_seq": 3000}})"};
    }
    if (absl::EndsWith(call, "/_info")) return {200, IndexInfo(3000, false)};
    return StagedDeployAnswer(call);
  }));
  UploadResult result = StagedUpload(couch);
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  ASSERT_THAT(result.warnings(), SizeIs(1)) << result.Dump();
  EXPECT_THAT(result.warnings()[0].message(), HasSubstr("has no boolean view_index.waiting_commit"));
  EXPECT_THAT(result.warnings()[0].message(), HasSubstr("_design/location__staging was kept"));
  for (const std::string& call : couch.requests()) {
    EXPECT_FALSE(absl::StartsWith(call, "DELETE")) << call;
  }
}

TEST_F(ScriptedCouchTest, AnIndexThatNeverSettlesKeepsTheStagingDocumentAndSaysWhy) {
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (absl::EndsWith(call, "/_info")) return {200, IndexInfo(42, true)};
    return StagedDeployAnswer(call);
  }));
  options_.staged_settle_timeout = absl::ZeroDuration();
  UploadResult result = StagedUpload(couch);
  // The live document is in place: the upload succeeded; only the clean-up is left.
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  EXPECT_EQ(result.Outcome("_design/location", "big").action(), v1::DesignDocOutcome::UPDATED);
  ASSERT_THAT(result.warnings(), SizeIs(1)) << result.Dump();
  EXPECT_THAT(result.warnings()[0].message(),
              HasSubstr("the index of _design/location in big did not settle within 0"));
  // Caught up (42 of 42): the commit alone was missing, and the warning names it.
  EXPECT_THAT(result.warnings()[0].message(),
              HasSubstr("its update_seq 42 has reached the build's 42, but CouchDB still "
                        "reports \"waiting_commit\": true"));
  EXPECT_THAT(result.warnings()[0].message(), HasSubstr("_design/location__staging was kept"));
  for (const std::string& call : couch.requests()) {
    EXPECT_FALSE(absl::StartsWith(call, "DELETE")) << call;
  }
}

// The signature check: the live document's _info names another index than the one built
// (someone changed the live views between the build and the switch). Waiting could never
// succeed; the upload says so and removes the staging document, which serves nothing.
TEST_F(ScriptedCouchTest, ALiveIndexWithAnotherSignatureIsReportedNotWaitedFor) {
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (call == "GET /big/_design/location__staging/_info") {
      return {200, IndexInfo(3000, true, "aaaa")};
    }
    if (call == "GET /big/_design/location/_info") return {200, IndexInfo(0, false, "bbbb")};
    if (call == "DELETE /big/_design/location__staging?rev=1-stage") return {200, "{}"};
    return StagedDeployAnswer(call);
  }));
  options_.staged_settle_timeout = absl::Hours(1);  // a wait would hang the test
  UploadResult result = StagedUpload(couch);
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  ASSERT_THAT(result.warnings(), SizeIs(1)) << result.Dump();
  EXPECT_THAT(result.warnings()[0].message(),
              HasSubstr("the index signature of _design/location in big (bbbb) is not the one "
                        "built under _design/location__staging (aaaa)"));
  // The staging document goes, but nothing claims the live document uses its index.
  const std::string printed = Printed(result);
  EXPECT_THAT(printed, HasSubstr("staged big/_design/location__staging: removed\n"));
  EXPECT_THAT(printed, Not(HasSubstr("uses its index")));
  std::vector<std::string> requests = couch.requests();
  ASSERT_FALSE(requests.empty());
  EXPECT_EQ(requests.back(), "DELETE /big/_design/location__staging?rev=1-stage");
}

TEST_F(ScriptedCouchTest, ADatabaseAdminGetsAStagedDeployWithoutProgressNumbers) {
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (call == "GET /_active_tasks") {
      return {401, R"({"error": "unauthorized", "reason": "You are not a server admin."})"};
    }
    if (absl::EndsWith(call, "/_info")) return {200, IndexInfo(7, false)};
    if (call == "DELETE /big/_design/location__staging?rev=1-stage") return {200, "{}"};
    return StagedDeployAnswer(call);
  }));
  UploadResult result = StagedUpload(couch);
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  std::vector<std::string> phases;
  for (const auto& e : result.events) {
    if (e.has_progress()) phases.push_back(e.progress().phase());
  }
  EXPECT_THAT(phases, ElementsAre("staged", "building", "built", "settled", "cleaned"));
  EXPECT_EQ(result.Outcome("_design/location", "big").action(), v1::DesignDocOutcome::UPDATED);
}

// Found by a review: once _active_tasks showed no build (not started yet, or a database admin
// who may not read it), the upload waited on the view query for as long as the build took and
// sent nothing meanwhile, so a proxy's read timeout (nginx's grpc_read_timeout) cut the call,
// and the build with it. It now sends a "building" event every heartbeat while it waits. The
// view's answer below is held until one has come.
TEST_F(ScriptedCouchTest, AStagedDeployKeepsReportingWhileTheViewQueryWaitsForTheBuild) {
  absl::Notification heartbeat_seen;
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (call == "GET /big/_design/location__staging/_view/towns?limit=0") {
      heartbeat_seen.WaitForNotificationWithTimeout(absl::Seconds(30));
      return {200, R"({"total_rows": 0, "offset": 0, "rows": []})"};
    }
    if (absl::EndsWith(call, "/_info")) return {200, IndexInfo(7, false)};
    if (call == "DELETE /big/_design/location__staging?rev=1-stage") return {200, "{}"};
    return StagedDeployAnswer(call);
  }));
  options_.staged_heartbeat = absl::Milliseconds(1);
  v1::UploadRequest request = Request(couch.url());
  request.set_staged(true);
  Uploader uploader(runner_, options_);
  std::vector<std::string> phases;
  const absl::Status status = uploader.Run(request, [&](const v1::UploadEvent& event) {
    if (!event.has_progress()) return true;
    phases.push_back(event.progress().phase());
    // Every heartbeat sends one (1 ms apart here): the first is told, once.
    if (phases.back() == "building" && !heartbeat_seen.HasBeenNotified()) {
      heartbeat_seen.Notify();
    }
    return true;
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_TRUE(heartbeat_seen.HasBeenNotified());
  ASSERT_GE(phases.size(), 5u);
  EXPECT_EQ(phases[0], "staged");
  EXPECT_EQ(phases[1], "building");
  EXPECT_THAT(std::vector<std::string>(phases.end() - 3, phases.end()),
              ElementsAre("built", "settled", "cleaned"));
}

// A staged deploy whose Upload is cancelled (its stop requested) while CouchDB builds the
// staging document's index (BuildingForever: the build never finishes).
UploadResult StagedDeployCancelledDuringTheBuild(::cnp::testing::FakeBlockingTaskRunner& runner,
                                                 const Uploader::Options& options,
                                                 const std::string& url) {
  v1::UploadRequest request;
  request.set_couchdb_url(url);
  request.set_database("big");
  *request.add_files() = File("design.yml", kYaml);
  request.set_staged(true);
  std::stop_source stop;
  UploadResult result;
  Uploader uploader(runner, options);
  result.status = uploader.Run(
      request,
      [&](const v1::UploadEvent& event) {
        result.events.push_back(event);
        if (event.has_progress() && event.progress().phase() == "building") stop.request_stop();
        return true;
      },
      stop.get_token());
  return result;
}

ScriptedResponse BuildingForever(const std::string& call) {
  if (call == "GET /_active_tasks") {
    return {200, absl::StrCat("[", IndexerTask("big", "_design/location__staging", 10, 100), "]")};
  }
  return StagedDeployAnswer(call);
}

// Cancelled before the live document was written: the staging document serves nothing, and
// left in place CouchDB would go on building (and keep up to date) its index. It is deleted,
// at the revision the upload wrote, though the upload's own connection refuses every request
// once stopped.
TEST_F(ScriptedCouchTest, AStagedDeployCancelledDuringItsBuildDeletesTheStagingDocument) {
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (call == "DELETE /big/_design/location__staging?rev=1-stage") return {200, "{}"};
    return BuildingForever(call);
  }));
  UploadResult result = StagedDeployCancelledDuringTheBuild(runner_, options_, couch.url());
  EXPECT_TRUE(absl::IsCancelled(result.status)) << result.status;
  EXPECT_THAT(result.status.message(),
              HasSubstr("its staging document _design/location__staging in big was deleted"));
  const std::vector<std::string> requests = couch.requests();
  EXPECT_EQ(requests.back(), "DELETE /big/_design/location__staging?rev=1-stage")
      << ::testing::PrintToString(requests);
  for (const std::string& call : requests) EXPECT_NE(call, "PUT /big/_design/location");
}

// Cancelled once the build is done, before the live write was sent (the upload's connection
// refuses it): the live document was not written, so the staging document goes too. Before,
// it was kept as if the live write might have been applied.
TEST_F(ScriptedCouchTest, AStagedDeployCancelledAfterItsBuildButBeforeTheLiveWriteDeletesTheStagingDocument) {
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (call == "DELETE /big/_design/location__staging?rev=1-stage") return {200, "{}"};
    return StagedDeployAnswer(call);
  }));
  v1::UploadRequest request;
  request.set_couchdb_url(couch.url());
  request.set_database("big");
  *request.add_files() = File("design.yml", kYaml);
  request.set_staged(true);
  std::stop_source stop;
  Uploader uploader(runner_, options_);
  const absl::Status status = uploader.Run(
      request,
      [&](const v1::UploadEvent& event) {
        if (event.has_progress() && event.progress().phase() == "built") stop.request_stop();
        return true;
      },
      stop.get_token());
  EXPECT_TRUE(absl::IsCancelled(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr("its staging document _design/location__staging in big was deleted"));
  const std::vector<std::string> requests = couch.requests();
  EXPECT_EQ(requests.back(), "DELETE /big/_design/location__staging?rev=1-stage")
      << ::testing::PrintToString(requests);
  for (const std::string& call : requests) EXPECT_NE(call, "PUT /big/_design/location");
}

// CouchDB refuses the clean-up: the status says what is left and what to do about it.
TEST_F(ScriptedCouchTest, AStagingDocumentThatCannotBeDeletedAfterACancelIsNamed) {
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (absl::StartsWith(call, "DELETE ")) {
      return {500, R"({"error": "unknown_error", "reason": "disk full"})"};
    }
    return BuildingForever(call);
  }));
  UploadResult result = StagedDeployCancelledDuringTheBuild(runner_, options_, couch.url());
  EXPECT_TRUE(absl::IsCancelled(result.status)) << result.status;
  EXPECT_THAT(result.status.message(),
              HasSubstr("its staging document _design/location__staging in big may be left: "
                        "deleting it failed ("));
  EXPECT_THAT(result.status.message(), HasSubstr("disk full"));
  EXPECT_THAT(result.status.message(), HasSubstr("Delete it, or run the same upload again"));
}

TEST_F(ScriptedCouchTest, AStagedDeployWithoutIndexChangesWritesDirectly) {
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (call == "GET /big") return {200, "{}"};
    if (call == "GET /big/_design/location") {
      return {200, R"({"_id": "_design/location", "_rev": "1-live", "language": "python",
                       "views": {"towns": {"map": "myviews.townmap|123"}},
                       "validate_doc_update": "myviews.validate|20"})"};
    }
    if (call == "PUT /big/_design/location") return {201, R"({"ok": true, "rev": "2-live"})"};
    return {500, "{}"};
  }));
  UploadResult result = StagedUpload(couch);
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  EXPECT_THAT(couch.requests(), ElementsAre("GET /", "GET /big", "GET /big/_design/location",
                                            "PUT /big/_design/location"));
}

TEST_F(ScriptedCouchTest, BasicAuthIsSentAndARefusedWriteIsExplained) {
  std::string authorization;
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    authorization = r.authorization;
    if (r.method == "GET" && r.target == "/big") return {200, "{}"};
    if (r.method == "GET") return {404, R"({"error": "not_found", "reason": "missing"})"};
    return {403, R"({"error": "forbidden", "reason": "You are not a db or server admin."})"};
  }));
  Uploader uploader(runner_, options_);
  UploadResult result = RunUpload(uploader, Request(couch.url()));
  EXPECT_TRUE(absl::IsPermissionDenied(result.status)) << result.status;
  EXPECT_EQ(authorization, "Basic YWRtaW46cHc=");  // admin:pw
  ASSERT_THAT(result.errors(), SizeIs(1));
  EXPECT_THAT(result.errors()[0].message(),
              HasSubstr("not allowed (forbidden: You are not a db or server admin.)"));
  EXPECT_EQ(result.errors()[0].design_doc(), "_design/location");
  EXPECT_EQ(result.errors()[0].database(), "big");
}

// CouchDB stopped taking the credentials in the middle of an upload (a 401 for the second of
// four design documents): the upload stops there, and says what it wrote and what it never
// tried, which no event names.
TEST_F(ScriptedCouchTest, AnUploadStoppedByA401SaysWhatWasWrittenAndWhatWasNotAttempted) {
  std::vector<std::string> puts;
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (call == "GET /big") return {200, "{}"};
    if (call == "GET /big/_design/same") {
      return {200, R"({"_id": "_design/same", "_rev": "1-s", "language": "python",
                       "views": {"v": {"map": "myviews.townmap|123"}}})"};
    }
    if (r.method == "GET") return {404, R"({"error": "not_found", "reason": "missing"})"};
    puts.push_back(call);
    if (call == "PUT /big/_design/a") return {201, R"({"ok": true, "rev": "1-a"})"};
    return {401, R"({"error": "unauthorized", "reason": "Name or password is incorrect."})"};
  }));
  v1::UploadRequest request = Request(couch.url());
  request.clear_files();
  *request.add_files() = File("four.yml",
                              "a: {views: {v: myviews.townmap}}\n"
                              "same: {views: {v: myviews.townmap}}\n"
                              "b: {views: {v: myviews.townmap}}\n"
                              "c: {views: {v: myviews.townmap}}\n"
                              "d: {views: {v: myviews.townmap}}\n");
  Uploader uploader(runner_, options_);
  UploadResult result = RunUpload(uploader, request);
  EXPECT_TRUE(absl::IsUnauthenticated(result.status)) << result.status << "\n" << result.Dump();
  EXPECT_THAT(puts, ElementsAre("PUT /big/_design/a", "PUT /big/_design/b"));
  EXPECT_THAT(std::string(result.status.message()),
              HasSubstr("; the upload stopped there: 1 written, 1 already up to date, 1 failed "
                        "and 2 not attempted, of 5 design documents"));
}

// The same 401 for the database, before any write: nothing was written, and nothing tried.
TEST_F(ScriptedCouchTest, AnUploadStoppedByA401BeforeAnyWriteSaysNothingWasAttempted) {
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest&) -> ScriptedResponse {
    return {401, R"({"error": "unauthorized", "reason": "Name or password is incorrect."})"};
  }));
  // The root is asked first, and answers as CouchDB (AsCouchDB); the database is refused.
  Uploader uploader(runner_, options_);
  UploadResult result = RunUpload(uploader, Request(couch.url()));
  EXPECT_TRUE(absl::IsUnauthenticated(result.status)) << result.status << "\n" << result.Dump();
  EXPECT_THAT(std::string(result.status.message()),
              HasSubstr("; the upload stopped there: nothing was written and 1 design "
                        "document was not attempted"));
}

// The write of the one design document sent, then CouchDB gone before it answered: whether it
// was applied is unknown, so the upload must not say that nothing was written (found by a
// review: it said "nothing was written and 0 of the 1 design document were not attempted").
TEST_F(ScriptedCouchTest, AWriteCutOffByTheConnectionSaysItMayHaveBeenApplied) {
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    if (r.method == "GET" && r.target == "/big") return {200, "{}"};
    if (r.method == "GET") return {404, R"({"error": "not_found", "reason": "missing"})"};
    ScriptedResponse gone;
    gone.hang_up = true;
    return gone;
  }));
  Uploader uploader(runner_, options_);
  UploadResult result = RunUpload(uploader, Request(couch.url()));
  EXPECT_FALSE(result.status.ok()) << result.Dump();
  const std::string message(result.status.message());
  EXPECT_THAT(message, Not(HasSubstr("nothing was written"))) << message;
  EXPECT_THAT(message, HasSubstr("; the upload stopped there: 1 failed (a write the failure cut "
                                 "off may still have been applied: check CouchDB), of 1 design "
                                 "document")) << message;
}

// A CouchDB that had answered (the root, the database) and then took longer than the request's
// time over a read: said as that, naming the request and the time, not as a CouchDB that may
// not be running at that URL; and a read wrote nothing, so no write "may have been applied".
TEST_F(ScriptedCouchTest, AReadThatTimesOutSaysSoAndClaimsNoWrite) {
  absl::Notification done;  // the slow answer is held until the upload has given up on it
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (call == "GET /big") return {200, "{}"};
    if (call == "GET /big/_design/location") {
      done.WaitForNotificationWithTimeout(absl::Seconds(30));
      return {404, R"({"error": "not_found", "reason": "missing"})"};
    }
    return {500, "{}"};
  }));
  options_.http_timeout = absl::Milliseconds(300);
  Uploader uploader(runner_, options_);
  UploadResult result = RunUpload(uploader, Request(couch.url()));
  done.Notify();
  EXPECT_TRUE(absl::IsUnavailable(result.status)) << result.status;
  const std::string message(result.status.message());
  EXPECT_THAT(message, HasSubstr(absl::StrCat("CouchDB at ", couch.url(),
                                              " did not answer GET /big/_design/location within "
                                              "300ms, the time given to each request")));
  EXPECT_THAT(message, Not(HasSubstr("is CouchDB running")));
  EXPECT_THAT(message, Not(HasSubstr("may still have been applied")));
  EXPECT_THAT(message, HasSubstr("; the upload stopped there: 1 failed, of 1 design document"));
}

// The same for a read cut off by the connection: not a write, so nothing may have been applied.
TEST_F(ScriptedCouchTest, AReadCutOffByTheConnectionClaimsNoWrite) {
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest& r) -> ScriptedResponse {
    if (r.method == "GET" && r.target == "/big") return {200, "{}"};
    ScriptedResponse gone;
    gone.hang_up = true;
    return gone;
  }));
  Uploader uploader(runner_, options_);
  UploadResult result = RunUpload(uploader, Request(couch.url()));
  const std::string message(result.status.message());
  EXPECT_THAT(message, HasSubstr("(GET /big/_design/location)")) << message;
  EXPECT_THAT(message, Not(HasSubstr("may still have been applied"))) << message;
}

TEST_F(ScriptedCouchTest, ServerErrorsCarryTheirStatusAndReason) {
  ScriptedHttpServer couch(AsCouchDB([&](const HttpRequest&) -> ScriptedResponse {
    return {500, R"({"error": "unknown_error", "reason": "function_clause"})"};
  }));
  Uploader uploader(runner_, options_);
  UploadResult result = RunUpload(uploader, Request(couch.url()));
  EXPECT_FALSE(result.status.ok());
  ASSERT_THAT(result.errors(), SizeIs(1));
  EXPECT_THAT(result.errors()[0].message(),
              HasSubstr("CouchDB answered HTTP 500 (unknown_error: function_clause)"));
}

// A missing database's advice is the request that creates it, its name escaped as CouchDB
// needs it in a path (account/a1 is /account%2Fa1; /account/a1 would be a document).
TEST_F(ScriptedCouchTest, AMissingDatabaseIsCreatedByItsEscapedPath) {
  std::string url;
  EXPECT_THAT(UploadToMissing("account/a1", url), HasSubstr("create it first (PUT /account%2Fa1)"));
}

// A missing database whose name CouchDB would not create (capitals) was advised "create it
// first (PUT /Towns)", which CouchDB answers with illegal_database_name (found by a review).
TEST_F(ScriptedCouchTest, AMissingDatabaseCouchDbWouldNotCreateGetsTheRuleNotAPut) {
  std::string url;
  const std::string message = UploadToMissing("Towns", url);
  EXPECT_THAT(message, HasSubstr("database \"Towns\" does not exist at " + url +
                                 ", and CouchDB would refuse to create it: a database name "
                                 "starts with a lowercase letter"));
  EXPECT_THAT(message, Not(HasSubstr("PUT")));
}

}  // namespace
}  // namespace cnp::upload::testing
