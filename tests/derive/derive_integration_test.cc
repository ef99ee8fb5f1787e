// cnp derive end to end: the cnp command line against pouchdb-server (CouchDB's _changes,
// _local documents, _bulk_docs, _find) with a real cnp-server running the handlers of
// tests/derive/pyfns/derive_fns.py, built with couch_named_python.mr's helpers.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/couchdb/couch_client.h"
#include "common/couchdb/json.h"
#include "tests/support/child_process.h"
#include "tests/support/pouchdb_server.h"
#include "tests/support/server_process.h"

namespace cnp::derive {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::cnp::testing::ChildProcess;
using ::cnp::testing::PouchDbServer;

constexpr absl::Duration kRunTimeout = absl::Seconds(60);

class DeriveTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto couch = PouchDbServer::Start();
    ASSERT_TRUE(couch.ok()) << couch.status();
    couch_ = couch->release();
    auto server = testing::ServerProcess::Start(
        {"--python-path=" + testing::Runfile("tests/derive/pyfns"), "--workers=1"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    // Answers of at most 100,000 bytes: a few documents with wide rows pass it together.
    auto small = testing::ServerProcess::Start({"--python-path=" + testing::Runfile("tests/derive/pyfns"),
                                                "--workers=1", absl::StrCat("--max-call-bytes=", kSmallCallBytes)});
    ASSERT_TRUE(small.ok()) << small.status();
    small_server_ = small->release();
  }
  static void TearDownTestSuite() {
    delete small_server_;
    delete server_;
    delete couch_;
  }

  void SetUp() override { dir_ = testing::MakeTempDir("derive"); }

  couchdb::CouchClient Http() { return couchdb::CouchClient({.base_url = couch_->url()}); }

  // Creates `db` with the documents of the JSON array `docs`.
  void Fill(const std::string& db, const std::string& docs) {
    couchdb::CouchClient http = Http();
    ASSERT_TRUE(http.Put(couchdb::DatabasePath(db), "").ok());
    Write(db, docs);
  }
  void Write(const std::string& db, const std::string& docs) {
    couchdb::CouchClient http = Http();
    auto r = http.Post(absl::StrCat(couchdb::DatabasePath(db), "/_bulk_docs"),
                       absl::StrCat("{\"docs\":", docs, "}"));
    ASSERT_TRUE(r.ok() && r->status == 201) << (r.ok() ? r->body : r.status().ToString());
  }
  // Creates `db` with big0 to big9, of 7 MB each (towns Town0 to Town9): each well under
  // CouchDB's 8 MB limit, together past the 64 MiB cnp derive reads in one answer.
  void FillLarge(const std::string& db) {
    couchdb::CouchClient http = Http();
    ASSERT_TRUE(http.Put(absl::StrCat("/", db), "").ok());
    const std::string pad(7 << 20, 'x');
    for (int i = 0; i < 10; ++i) {
      auto r = http.Put(absl::StrCat("/", db, "/big", i),
                        absl::StrCat(R"({"town":"Town)", i, R"(","pad":")", pad, "\"}"));
      ASSERT_TRUE(r.ok() && r->status == 201) << (r.ok() ? r->body : r.status().ToString());
    }
  }
  rapidjson::Document Get(const std::string& path) {
    couchdb::CouchClient http = Http();
    auto r = http.Get(path);
    EXPECT_TRUE(r.ok()) << r.status();
    auto doc = couchdb::ParseJson(r.ok() ? r->body : "null");
    EXPECT_TRUE(doc.ok());
    return std::move(*doc);
  }
  std::string Rev(const std::string& db, const std::string& id) {
    rapidjson::Document d = Get(absl::StrCat("/", db, "/", id));
    return d.IsObject() && d.HasMember("_rev") ? d["_rev"].GetString() : "";
  }
  // The derived documents of `db` (no design documents), by id.
  std::map<std::string, rapidjson::Document> Derived(const std::string& db) {
    rapidjson::Document all = Get(absl::StrCat("/", db, "/_all_docs?include_docs=true"));
    std::map<std::string, rapidjson::Document> out;
    for (const auto& row : all["rows"].GetArray()) {
      std::string id = row["id"].GetString();
      if (id.rfind("_design/", 0) == 0) continue;
      rapidjson::Document d;
      d.CopyFrom(row["doc"], d.GetAllocator());
      out.emplace(id, std::move(d));
    }
    return out;
  }
  // A FIFO in dir_ that derive_fns.announced_slow_town writes a byte to once its Map call has
  // started; `fd` its reading end, opened before the handler opens it for writing (which would
  // otherwise wait for a reader). Returns its path.
  std::string MapStartedFifo(int& fd) {
    const std::string fifo = absl::StrCat(dir_, "/map-started");
    EXPECT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    fd = open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
    EXPECT_GE(fd, 0);
    return fifo;
  }
  // Whether the Map call started (its byte came on `fd`) within kRunTimeout; closes `fd`.
  static bool AwaitMapStarted(int fd) {
    pollfd started{.fd = fd, .events = POLLIN, .revents = 0};
    const bool came = poll(&started, 1, absl::ToInt64Milliseconds(kRunTimeout)) == 1;
    close(fd);
    return came;
  }
  // Town -> count, of the reduce documents of derive_fns.per_town in `db`.
  std::map<std::string, int> TownCounts(const std::string& db) {
    std::map<std::string, int> out;
    for (auto& [id, doc] : Derived(db)) out[doc["mr_key"].GetString()] = doc["mr_value"].GetInt();
    return out;
  }
  // mr_key (as JSON) -> the derived document's JSON without _id and _rev.
  std::multimap<std::string, std::string> ByKey(const std::string& db) {
    std::multimap<std::string, std::string> out;
    for (auto& [id, doc] : Derived(db)) {
      doc.RemoveMember("_id");
      doc.RemoveMember("_rev");
      out.emplace(couchdb::ToJson(doc["mr_key"]), couchdb::ToJson(doc));
    }
    return out;
  }

  std::string Declare(const std::string& yaml) {
    std::string path = absl::StrCat(dir_, "/derive.yml");
    std::ofstream(path) << yaml;
    return path;
  }
  std::vector<std::string> Command(const std::string& declaration, std::vector<std::string> extra,
                                   const testing::ServerProcess* server = nullptr) {
    std::vector<std::string> argv = {testing::Runfile("client/cli/cnp"), "derive",
                                     "--target=" + (server ? server : server_)->target()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(couch_->url());
    argv.push_back(declaration);
    return argv;
  }
  // `cnp derive --once`; its output, once it has said it caught up.
  std::string RunOnce(const std::string& yaml, std::vector<std::string> extra = {},
                      const testing::ServerProcess* server = nullptr) {
    extra.push_back("--once");
    auto run = ChildProcess::Start(Command(Declare(yaml), extra, server), dir_, ": caught up", kRunTimeout);
    EXPECT_TRUE(run.ok()) << run.status();
    return run.ok() ? (*run)->output() : "";
  }

  // For a run that ends by itself: once it has exited its output is whole, read here once.
  struct Exited {
    int exit_code;
    std::string output;
  };
  absl::StatusOr<Exited> RunToExit(const std::vector<std::string>& argv, const std::string& ready) {
    auto run = ChildProcess::Start(argv, dir_, ready, kRunTimeout);
    if (!run.ok()) return run.status();
    std::optional<int> exit_code = (*run)->WaitForExitCode(kRunTimeout);
    if (!exit_code.has_value()) {
      return absl::DeadlineExceededError(
          absl::StrCat("still running; it printed:\n", (*run)->output()));
    }
    return Exited{*exit_code, (*run)->output()};
  }

  // A follower of `declaration` that holds the lease (renewing it every 500 ms) and has derived
  // the first change: the process, and the holder id it said.
  struct Holder {
    std::unique_ptr<ChildProcess> process;
    std::string id;
  };
  absl::StatusOr<Holder> StartHolder(const std::string& declaration, const std::string& lease_timeout) {
    auto follower = ChildProcess::Start(
        Command(declaration, {"--lease-timeout=" + lease_timeout, "--lease-renew=500ms"}), dir_,
        "holding the lease as ", kRunTimeout);
    if (!follower.ok()) return follower.status();
    if (!(*follower)->WaitForOutput("seq 1, 1 change(s)", kRunTimeout)) {
      return absl::DeadlineExceededError(absl::StrCat("no first change; it printed:\n", (*follower)->output()));
    }
    const std::string out = (*follower)->output();
    const size_t as = out.find("holding the lease as ") + 21;
    return Holder{*std::move(follower), out.substr(as, out.find('\n', as) - as)};
  }

  // tests/derive/hold_proxy.py in front of pouchdb-server with `rules`; `url` is its address.
  absl::StatusOr<std::unique_ptr<ChildProcess>> StartProxy(const std::vector<std::string>& rules,
                                                           std::string& url) {
    std::vector<std::string> argv = {"python3", testing::Runfile("tests/derive/hold_proxy.py"),
                                     absl::StrCat(couch_->port())};
    argv.insert(argv.end(), rules.begin(), rules.end());
    auto proxy = ChildProcess::Start(argv, dir_, "listening on ", kRunTimeout);
    if (!proxy.ok()) return proxy.status();
    if (!(*proxy)->WaitForOutput("\n", kRunTimeout)) {
      return absl::DeadlineExceededError("the proxy said no port");
    }
    const std::string said = (*proxy)->output();
    const size_t port = said.find("listening on ") + 13;
    url = absl::StrCat("http://127.0.0.1:", said.substr(port, said.find('\n') - port));
    return proxy;
  }

  // Whether `path` answers 404: what a run that must write nothing has not created.
  ::testing::AssertionResult IsMissing(const std::string& path) {
    absl::StatusOr<couchdb::HttpResponse> r = Http().Get(path);
    if (!r.ok()) return ::testing::AssertionFailure() << r.status();
    if (r->status != 404) {
      return ::testing::AssertionFailure() << path << ": HTTP " << r->status << " " << r->body;
    }
    return ::testing::AssertionSuccess();
  }

  // The errors recorded in _local/cnp-derive:NAME:errors of `db`.
  rapidjson::Document Errors(const std::string& db, const std::string& name) {
    return Get(absl::StrCat("/", db, "/_local/cnp-derive%3A", name, "%3Aerrors"));
  }

  static constexpr int kSmallCallBytes = 100000;
  static PouchDbServer* couch_;
  static testing::ServerProcess* server_;
  static testing::ServerProcess* small_server_;  // --max-call-bytes=kSmallCallBytes
  std::string dir_;
};

PouchDbServer* DeriveTest::couch_ = nullptr;
testing::ServerProcess* DeriveTest::server_ = nullptr;
testing::ServerProcess* DeriveTest::small_server_ = nullptr;

std::string TownsDeclaration(const std::string& name, const std::string& source,
                             const std::string& target, const std::string& handler = "derive_fns.town",
                             int version = 1) {
  return absl::StrCat("name: ", name, "\nhandlers:\n  ", target, ":\n    ", source,
                      ": {type: map, version: ", version, ", handler: ", handler, "}\n");
}

// NAME's map stage (derive_fns.town, SOURCE -> NAME_map) and its reduce stage counting each
// town's rows (derive_fns.per_town, NAME_map -> NAME_count).
std::string TownCountDeclaration(const std::string& name, const std::string& source) {
  return absl::StrCat("name: ", name, "\nhandlers:\n  ", name, "_map:\n    ", source,
                      ": {type: map, version: 1, handler: derive_fns.town}\n  ", name, "_count:\n    ", name,
                      "_map: {type: reduce, version: 1, handler: derive_fns.per_town}\n");
}

TEST_F(DeriveTest, InitialSyncWritesOneDerivedDocumentPerRowWithItsProvenance) {
  Fill("init_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"},{"_id":"c","town":"Oslo"},
                       {"_id":"d","name":"no town: no row"}])");
  // Batches of two: the next batch is read while one is written.
  std::string out = RunOnce(TownsDeclaration("init", "init_src", "init_map"), {"--batch-size=2"});
  EXPECT_THAT(out, HasSubstr("init_src -> init_map: seq 4, 4 change(s)"));
  std::map<std::string, rapidjson::Document> derived = Derived("init_map");
  ASSERT_EQ(derived.size(), 3u);
  std::multimap<std::string, std::string> sources;
  for (auto& [id, doc] : derived) {
    EXPECT_EQ(id.rfind("init_src:", 0), 0u) << id;
    EXPECT_EQ(std::string(doc["mr_source_type"].GetString()), "init_src");
    EXPECT_EQ(doc["mr_version"].GetInt(), 1);
    EXPECT_TRUE(doc["mr_value"].IsNull());
    sources.emplace(doc["mr_key"].GetString(), doc["mr_source_id"].GetString());
  }
  EXPECT_THAT(sources, ::testing::UnorderedElementsAre(::testing::Pair("Oslo", "a"), ::testing::Pair("Bergen", "b"),
                                                       ::testing::Pair("Oslo", "c")));
  rapidjson::Document checkpoint = Get("/init_map/_local/cnp-derive%3Ainit%3Asource%3Ainit_src");
  EXPECT_EQ(couchdb::ToJson(checkpoint["seq"]), "\"4\"");
  rapidjson::Document status = Get("/init_map/_local/cnp-derive%3Ainit%3Astatus");
  EXPECT_EQ(status["stages"][0]["processed"].GetInt(), 4);
  EXPECT_EQ(status["stages"][0]["backlog"].GetInt(), 0);
}

// qvarn-mr names the provenance _mr_key and so on; the database refuses such a document, which
// is why cnp derive writes mr_key. (pouchdb-server answers HTTP 500 with CouchDB's
// doc_validation error and reason; CouchDB 3 answers 400 with the same.)
TEST_F(DeriveTest, TheDatabaseRefusesQvarnMrsUnderscoreFieldsSoDerivedDocumentsUseMrNames) {
  couchdb::CouchClient http = Http();
  ASSERT_TRUE(http.Put("/underscore", "").ok());
  auto refused = http.Put("/underscore/row", R"({"_mr_key":"Oslo","_mr_version":1})");
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_GE(refused->status, 400);
  EXPECT_THAT(refused->body, HasSubstr("doc_validation"));
  EXPECT_THAT(refused->body, HasSubstr("Bad special document member: _mr_key"));

  Fill("underscore_src", R"([{"_id":"a","town":"Oslo"}])");
  RunOnce(TownsDeclaration("underscore", "underscore_src", "underscore_map"));
  std::map<std::string, rapidjson::Document> derived = Derived("underscore_map");
  ASSERT_EQ(derived.size(), 1u);
  for (const auto& member : derived.begin()->second.GetObject()) {
    std::string name = member.name.GetString();
    if (name != "_id" && name != "_rev") {
      EXPECT_NE(name[0], '_') << name;
    }
  }
}

TEST_F(DeriveTest, FollowingTakesEachSourcesChangesFromItsContinuousFeed) {
  Fill("follow_a", R"([{"_id":"a1","town":"Oslo"}])");
  Fill("follow_b", R"([{"_id":"b1","town":"Lima"}])");
  std::string declaration = Declare(R"(name: follow
handlers:
  follow_map:
    follow_a: {type: map, version: 1, handler: derive_fns.town}
    follow_b: {type: map, version: 1, handler: derive_fns.town}
)");
  auto run = ChildProcess::Start(Command(declaration, {"--heartbeat=200ms"}), dir_,
                                 "follow_b -> follow_map: following the changes from seq 1 (feed=continuous, heartbeat 200ms)",
                                 kRunTimeout);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_THAT((*run)->output(), HasSubstr("follow_a -> follow_map: following the changes from seq 1 (feed=continuous"));
  // A change in the second source arrives on its feed while the first stays quiet, and then
  // the other way round.
  Write("follow_b", R"([{"_id":"b2","town":"Quito"}])");
  ASSERT_TRUE((*run)->WaitForOutput("follow_b -> follow_map: seq 2, 2 change(s)", kRunTimeout)) << (*run)->output();
  Write("follow_a", R"([{"_id":"a2","town":"Bergen"},{"_id":"a3","town":"Oslo"}])");
  ASSERT_TRUE((*run)->WaitForOutput("follow_a -> follow_map: seq 3, 3 change(s)", kRunTimeout)) << (*run)->output();
  std::multimap<std::string, std::string> rows = ByKey("follow_map");
  EXPECT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows.count("\"Quito\""), 1u);
  EXPECT_EQ(rows.count("\"Oslo\""), 2u);
  EXPECT_THAT((*run)->output(), Not(HasSubstr("reconnecting")));
  rapidjson::Document checkpoint = Get("/follow_map/_local/cnp-derive%3Afollow%3Asource%3Afollow_a");
  EXPECT_EQ(couchdb::ToJson(checkpoint["seq"]), "\"3\"");
}

// A continuous feed brings a document's creation and its update in one batch when both arrive
// while a batch before them is mapped (here one whose handler takes 2s). Before, the rows of
// both versions were written, and the first version's row was kept for good (found by a
// review); now the batch derives the document from its last change.
TEST_F(DeriveTest, ACreationAndAnUpdateInOneFeedBatchLeaveOnlyTheLastVersionsRows) {
  Fill("dup_src", R"([{"_id":"a","town":"Oslo"}])");
  auto run = ChildProcess::Start(
      Command(Declare(TownsDeclaration("dup", "dup_src", "dup_map", "derive_fns.slow_town")), {"--heartbeat=200ms"}),
      dir_, "dup_src -> dup_map: following the changes from seq 1", kRunTimeout);
  ASSERT_TRUE(run.ok()) << run.status();
  Write("dup_src", R"([{"_id":"slow","town":"Slow","sleep":2}])");
  Write("dup_src", R"([{"_id":"x","town":"Bergen"}])");
  Write("dup_src", absl::StrCat(R"([{"_id":"x","_rev":")", Rev("dup_src", "x"), R"(","town":"Lima"}])"));
  // (The feed lists x once if it is read after both writes: the change count is not asserted.)
  ASSERT_TRUE((*run)->WaitForOutput("dup_src -> dup_map: seq 4,", kRunTimeout)) << (*run)->output();
  std::multimap<std::string, std::string> rows;  // mr_source_id -> mr_key
  for (auto& [id, doc] : Derived("dup_map")) rows.emplace(doc["mr_source_id"].GetString(), doc["mr_key"].GetString());
  EXPECT_THAT(rows, ::testing::UnorderedElementsAre(::testing::Pair("a", "Oslo"), ::testing::Pair("slow", "Slow"),
                                                    ::testing::Pair("x", "Lima")));
  ASSERT_TRUE(IsMissing("/dup_map/_local/cnp-derive%3Adup%3Aerrors"));
}

TEST_F(DeriveTest, RestartResumesFromTheCheckpointAndRewritesNothingUnchanged) {
  Fill("inc_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"},{"_id":"c","town":"Oslo"}])");
  std::string declaration = TownsDeclaration("inc", "inc_src", "inc_map");
  RunOnce(declaration);
  std::map<std::string, std::string> revs;
  for (auto& [id, doc] : Derived("inc_map")) revs[doc["mr_source_id"].GetString()] = doc["_rev"].GetString();
  ASSERT_EQ(revs.size(), 3u);

  // b moves town, c is saved again unchanged, d is new: three changes after the checkpoint.
  Write("inc_src", absl::StrCat(R"([{"_id":"b","_rev":")", Rev("inc_src", "b"), R"(","town":"Tromso"},)",
                                R"({"_id":"c","_rev":")", Rev("inc_src", "c"), R"(","town":"Oslo"},)",
                                R"({"_id":"d","town":"Oslo"}])"));
  std::string out = RunOnce(declaration);
  EXPECT_THAT(out, HasSubstr("seq 6, 3 change(s)"));
  // b's old row is deleted and its new one written, d's written; c's row is untouched.
  EXPECT_THAT(out, HasSubstr("3 written"));
  std::map<std::string, std::string> keys;
  for (auto& [id, doc] : Derived("inc_map")) {
    std::string source = doc["mr_source_id"].GetString();
    keys[source] = doc["mr_key"].GetString();
    if (source == "a" || source == "c") {
      EXPECT_EQ(std::string(doc["_rev"].GetString()), revs[source]) << source;
    }
  }
  EXPECT_EQ(keys, (std::map<std::string, std::string>{{"a", "Oslo"}, {"b", "Tromso"}, {"c", "Oslo"}, {"d", "Oslo"}}));

  // Nothing new: nothing read, nothing written.
  out = RunOnce(declaration);
  EXPECT_THAT(out, Not(HasSubstr("change(s)")));
}

// A source database named lease, status or errors had its checkpoint at the id of the
// instance's lease, status or errors document (_local/cnp-derive:NAME:lease): it was
// overwritten by them, and every run started over. Checkpoints now have ids of their own
// (found by a review).
TEST_F(DeriveTest, SourcesNamedLeaseStatusAndErrorsKeepCheckpointsOfTheirOwn) {
  for (const char* source : {"lease", "status", "errors"}) {
    Fill(source, R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"}])");
  }
  std::string declaration =
      "name: own\n"
      "handlers:\n"
      "  own_map:\n"
      "    lease: {type: map, version: 1, handler: derive_fns.town}\n"
      "    status: {type: map, version: 1, handler: derive_fns.town}\n"
      "    errors: {type: map, version: 1, handler: derive_fns.town}\n";
  std::string out = RunOnce(declaration);
  for (const char* source : {"lease", "status", "errors"}) {
    EXPECT_THAT(out, HasSubstr(absl::StrCat(source, " -> own_map: seq 2, 2 change(s)")));
  }
  EXPECT_EQ(Derived("own_map").size(), 6u);

  // Resumed from each checkpoint: nothing read again.
  out = RunOnce(declaration);
  EXPECT_THAT(out, Not(HasSubstr("change(s)")));
  for (const char* source : {"lease", "status", "errors"}) {
    rapidjson::Document checkpoint = Get(absl::StrCat("/own_map/_local/cnp-derive%3Aown%3Asource%3A", source));
    EXPECT_EQ(checkpoint.IsObject() && checkpoint.HasMember("seq") ? couchdb::ToJson(checkpoint["seq"]) : "none",
              "\"2\"")
        << source << ": " << couchdb::ToJson(checkpoint);
  }
  rapidjson::Document lease = Get("/own_map/_local/cnp-derive%3Aown%3Alease");
  EXPECT_TRUE(lease.HasMember("released_by") && !lease.HasMember("seq")) << couchdb::ToJson(lease);
  rapidjson::Document status = Get("/own_map/_local/cnp-derive%3Aown%3Astatus");
  EXPECT_TRUE(status.HasMember("stages") && !status.HasMember("seq")) << couchdb::ToJson(status);
}

// Earlier releases kept a checkpoint at _local/cnp-derive:NAME:SOURCE. An upgrade resumes from
// it rather than redoing the stage, and moves it to the new id, also when nothing changed
// meanwhile; left behind, it would be resumed from again once the new one were removed.
TEST_F(DeriveTest, ACheckpointAtItsEarlierIdIsResumedFromAndMoved) {
  Fill("moved/src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"}])");
  std::string declaration = TownsDeclaration("moved", "moved/src", "moved_map");
  RunOnce(declaration);
  ASSERT_EQ(Derived("moved_map").size(), 2u);
  const std::string new_id = "/moved_map/_local/cnp-derive%3Amoved%3Asource%3Amoved%2Fsrc";
  const std::string old_id = "/moved_map/_local/cnp-derive%3Amoved%3Amoved%2Fsrc";
  couchdb::CouchClient http = Http();
  // What an earlier release left: its checkpoint at the old id, none at the new one.
  auto as_before = [&] {
    rapidjson::Document checkpoint = Get(new_id);
    ASSERT_TRUE(checkpoint.IsObject() && checkpoint.HasMember("_rev")) << couchdb::ToJson(checkpoint);
    auto removed = http.Delete(absl::StrCat(new_id, "?rev=", checkpoint["_rev"].GetString()));
    ASSERT_TRUE(removed.ok() && removed->status == 200) << (removed.ok() ? removed->body : removed.status().ToString());
    checkpoint.RemoveMember("_id");
    checkpoint.RemoveMember("_rev");
    auto put = http.Put(old_id, couchdb::ToJson(checkpoint));
    ASSERT_TRUE(put.ok() && put->status == 201) << (put.ok() ? put->body : put.status().ToString());
  };
  as_before();
  Write("moved/src", R"([{"_id":"c","town":"Lima"}])");
  std::string out = RunOnce(declaration);
  EXPECT_THAT(out, HasSubstr("moved/src -> moved_map: resuming from the checkpoint "
                             "_local/cnp-derive:moved:moved/src of an earlier release; it moves to "
                             "_local/cnp-derive:moved:source:moved/src"));
  EXPECT_THAT(out, HasSubstr("moved/src -> moved_map: seq 3, 1 change(s)"));
  EXPECT_EQ(Derived("moved_map").size(), 3u);
  EXPECT_EQ(couchdb::ToJson(Get(new_id)["seq"]), "\"3\"");
  auto old = http.Get(old_id);
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->status, 404) << old->body;

  // A quiet source: moved all the same, nothing read again.
  as_before();
  out = RunOnce(declaration);
  EXPECT_THAT(out, HasSubstr("resuming from the checkpoint _local/cnp-derive:moved:moved/src"));
  EXPECT_THAT(out, Not(HasSubstr("change(s)")));
  EXPECT_EQ(couchdb::ToJson(Get(new_id)["seq"]), "\"3\"");
  old = http.Get(old_id);
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->status, 404) << old->body;
  out = RunOnce(declaration);
  EXPECT_THAT(out, Not(HasSubstr("resuming from the checkpoint")));
}

TEST_F(DeriveTest, ADeletedSourceDocumentRemovesWhatItProduced) {
  Fill("del_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"}])");
  std::string declaration = TownsDeclaration("del", "del_src", "del_map");
  RunOnce(declaration);
  ASSERT_EQ(Derived("del_map").size(), 2u);
  Write("del_src", absl::StrCat(R"([{"_id":"a","_rev":")", Rev("del_src", "a"), R"(","_deleted":true}])"));
  RunOnce(declaration);
  std::map<std::string, rapidjson::Document> derived = Derived("del_map");
  ASSERT_EQ(derived.size(), 1u);
  EXPECT_EQ(std::string(derived.begin()->second["mr_source_id"].GetString()), "b");
}

// A derived document with a conflicting revision (replication into the target writes them):
// removing its row deleted the winner alone, the conflicting revision became the winner, and
// the row of a deleted source document was back, with nothing said (found by a probe).
TEST_F(DeriveTest, ARemovedRowTakesItsConflictingRevisionsWithIt) {
  Fill("tconf_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"}])");
  std::string declaration = TownsDeclaration("tconf", "tconf_src", "tconf_map");
  RunOnce(declaration);
  std::string b_row;
  for (auto& [id, doc] : Derived("tconf_map")) {
    if (std::string(doc["mr_source_id"].GetString()) == "b") b_row = id;
  }
  ASSERT_FALSE(b_row.empty());
  rapidjson::Document loser = Get(absl::StrCat("/tconf_map/", b_row));
  loser["_rev"].SetString("1-00000000000000000000000000000000", loser.GetAllocator());
  auto replicated = Http().Post("/tconf_map/_bulk_docs",
                                absl::StrCat(R"({"new_edits":false,"docs":[)", couchdb::ToJson(loser), "]}"));
  ASSERT_TRUE(replicated.ok() && replicated->status == 201)
      << (replicated.ok() ? replicated->body : replicated.status().ToString());
  ASSERT_TRUE(Get(absl::StrCat("/tconf_map/", b_row, "?conflicts=true")).HasMember("_conflicts"));
  Write("tconf_src", absl::StrCat(R"([{"_id":"b","_rev":")", Rev("tconf_src", "b"), R"(","_deleted":true}])"));
  RunOnce(declaration);
  std::map<std::string, rapidjson::Document> derived = Derived("tconf_map");
  ASSERT_EQ(derived.size(), 1u) << couchdb::ToJson(Get(absl::StrCat("/tconf_map/", b_row)));
  EXPECT_EQ(std::string(derived.begin()->second["mr_source_id"].GetString()), "a");
  // Both leaves deleted, each keeping the key that counted the row: whichever CouchDB makes the
  // deleted winner tells a reduce stage which key lost it.
  rapidjson::Document leaves = Get(absl::StrCat("/tconf_map/", b_row, "?open_revs=all"));
  ASSERT_TRUE(leaves.IsArray() && leaves.Size() == 2) << couchdb::ToJson(leaves);
  for (const rapidjson::Value& leaf : leaves.GetArray()) {
    ASSERT_TRUE(leaf.HasMember("ok")) << couchdb::ToJson(leaves);
    EXPECT_TRUE(leaf["ok"].HasMember("_deleted")) << couchdb::ToJson(leaves);
    ASSERT_TRUE(leaf["ok"].HasMember("mr_key")) << couchdb::ToJson(leaves);
    EXPECT_EQ(couchdb::ToJson(leaf["ok"]["mr_key"]), "\"Bergen\"");
  }
}

// The sweep after a version bump says how many documents it removed, not revisions: a row with a
// conflicting revision counted twice (the closing notes carried it as left).
TEST_F(DeriveTest, TheSweepCountsDocumentsNotRevisions) {
  Fill("tconfv_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"}])");
  RunOnce(TownsDeclaration("tconfv", "tconfv_src", "tconfv_map"));
  std::map<std::string, rapidjson::Document> derived = Derived("tconfv_map");
  ASSERT_EQ(derived.size(), 2u);
  rapidjson::Document loser = Get(absl::StrCat("/tconfv_map/", derived.begin()->first));
  loser["_rev"].SetString("1-00000000000000000000000000000000", loser.GetAllocator());
  auto replicated = Http().Post(
      "/tconfv_map/_bulk_docs",
      absl::StrCat(R"({"new_edits":false,"docs":[)", couchdb::ToJson(loser), "]}"));
  ASSERT_TRUE(replicated.ok() && replicated->status == 201)
      << (replicated.ok() ? replicated->body : replicated.status().ToString());
  std::string out = RunOnce(
      TownsDeclaration("tconfv", "tconfv_src", "tconfv_map", "derive_fns.given_rows", 2));
  EXPECT_THAT(out, HasSubstr("removed 2 derived document(s) of other versions"));
  EXPECT_TRUE(Derived("tconfv_map").empty());
}

// A document id may hold U+0000. Read as a C string, "victim\u0000evil" was "victim": its rows
// took victim's ids (overwriting victim's row), its deletion deleted victim's rows, and its
// error was recorded as victim's with the message cut at the NUL.
// A conflict written by replication (new_edits:false) whose winner is another first
// revision: the rows of the earlier winner go, though the winner's generation is 1. So too when
// the earlier winner's branch was deleted, and when its rows were written earlier in the same
// initial synchronization.
TEST_F(DeriveTest, AConflictingFirstRevisionThatWinsReplacesTheEarlierWinnersRows) {
  Fill("conflict_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"},{"_id":"c","town":"Molde"}])");
  std::string declaration = TownsDeclaration("conflict", "conflict_src", "conflict_map");
  RunOnce(declaration);
  ASSERT_EQ(Derived("conflict_map").size(), 3u);
  // 1-fff... wins over any other first revision: the highest revision id wins a tie.
  const std::string winner = "1-ffffffffffffffffffffffffffffffff";
  const std::string c_rev = Rev("conflict_src", "c");
  Write("conflict_src", absl::StrCat(R"([{"_id":"c","_rev":")", c_rev, R"(","_deleted":true}])"));
  couchdb::CouchClient http = Http();
  auto r = http.Post("/conflict_src/_bulk_docs",
                     absl::StrCat(R"({"new_edits":false,"docs":[{"_id":"a","_rev":")", winner,
                                  R"(","town":"Tromso"},{"_id":"c","_rev":")", winner, R"(","town":"Alta"}]})"));
  ASSERT_TRUE(r.ok() && r->status == 201) << (r.ok() ? r->body : r.status().ToString());
  ASSERT_EQ(Rev("conflict_src", "a"), winner);
  ASSERT_EQ(Rev("conflict_src", "c"), winner);
  RunOnce(declaration);
  std::multimap<std::string, std::string> keys = ByKey("conflict_map");
  EXPECT_EQ(keys.count("\"Oslo\""), 0u);
  EXPECT_EQ(keys.count("\"Molde\""), 0u);
  EXPECT_EQ(keys.count("\"Tromso\""), 1u);
  EXPECT_EQ(keys.count("\"Alta\""), 1u);
  EXPECT_EQ(keys.size(), 3u);
  // A first sync of the same source into another target: the same rows.
  RunOnce(TownsDeclaration("conflict2", "conflict_src", "conflict_map2"));
  EXPECT_EQ(ByKey("conflict_map2"), keys);
}

TEST_F(DeriveTest, AnIdHoldingNulIsItsOwnDocumentNotThePrefixBeforeIt) {
  const std::string nul("\0", 1);
  const std::string declaration = TownsDeclaration("nul", "nul_src", "nul_map", "derive_fns.given_rows");
  auto rows_of = [&] {
    std::map<std::string, std::string> rows;  // mr_source_id -> mr_value
    for (auto& [id, doc] : Derived("nul_map")) {
      rows[std::string(couchdb::StringView(doc["mr_source_id"]))] = couchdb::ToJson(doc["mr_value"]);
    }
    return rows;
  };
  Fill("nul_src", R"([{"_id":"victim","rows":[["vk","victim-value"]]}])");
  RunOnce(declaration);
  ASSERT_THAT(rows_of(), ::testing::ElementsAre(::testing::Pair("victim", "\"victim-value\"")));

  Write("nul_src", R"([{"_id":"victim\u0000evil","rows":[["vk","FORGED by attacker"]]},)"
                   R"( {"_id":"bad\u0000tail","bad":true}])");
  RunOnce(declaration);
  EXPECT_THAT(rows_of(), ::testing::ElementsAre(
                             ::testing::Pair("victim", "\"victim-value\""),
                             ::testing::Pair("victim" + nul + "evil", "\"FORGED by attacker\"")));
  rapidjson::Document errors = Errors("nul_map", "nul");
  ASSERT_TRUE(errors.HasMember("errors")) << couchdb::ToJson(errors);
  ASSERT_EQ(errors["errors"].Size(), 1u);
  EXPECT_EQ(couchdb::StringView(errors["errors"][0]["doc_id"]), "bad" + nul + "tail");
  EXPECT_THAT(std::string(couchdb::StringView(errors["errors"][0]["message"])),
              HasSubstr("bad document bad" + nul + "tail ("));

  rapidjson::Document evil = Get(absl::StrCat(
      "/nul_src/", couchdb::CouchClient::EscapeSegment("victim" + nul + "evil")));
  ASSERT_TRUE(evil.HasMember("_rev")) << couchdb::ToJson(evil);
  Write("nul_src", absl::StrCat(R"([{"_id":"victim\u0000evil","_rev":")", evil["_rev"].GetString(),
                                R"(","_deleted":true}])"));
  RunOnce(declaration);
  EXPECT_THAT(rows_of(), ::testing::ElementsAre(::testing::Pair("victim", "\"victim-value\"")));
}

// Document ids and handlers' messages come from whoever writes the source: on stderr they are
// escaped as in cnp-server's log. Raw, a newline and ESC [31m in an id printed a forged line
// and coloured the terminal.
TEST_F(DeriveTest, IdsAndMessagesOnStderrAreEscaped) {
  Fill("esc_src", R"([{"_id":"x\nFAKE cnp derive ERROR\u001b[31m","bad":true}])");
  std::string out = RunOnce(TownsDeclaration("esc", "esc_src", "esc_map", "derive_fns.given_rows"));
  EXPECT_THAT(out, HasSubstr(R"(derive_fns.given_rows failed on x\nFAKE cnp derive ERROR\x1b[31m: )"
                             R"(ValueError: bad document x\nFAKE cnp derive ERROR\x1b[31m ()"));
  EXPECT_THAT(out, Not(HasSubstr("\nFAKE")));
  EXPECT_EQ(out.find('\x1b'), std::string::npos) << out;
}

// A target may hold its users' own documents. Those whose ids start with a source's name and
// ':' ("people:note", where the rows derived from people go) were deleted by the first run's
// sweep as "derived documents of other versions", and by a version bump's (a CLI probe). Only
// what carries a stage's mr_source_type and a mr_version is cnp derive's to delete.
TEST_F(DeriveTest, TheSweepKeepsDocumentsItDidNotWriteWhateverTheirIds) {
  Fill("own_src", R"([{"_id":"a","town":"Oslo"}])");
  Fill("own_map", R"([{"_id":"own_src:note","text":"keep me"},)"
                  R"( {"_id":"own_src:other","mr_source_type":"elsewhere","mr_version":1}])");
  std::string first = RunOnce(TownsDeclaration("own", "own_src", "own_map"));
  EXPECT_THAT(first, HasSubstr("warning: kept 2 document(s) whose ids start with 'own_src:' but "
                               "which cnp derive did not write"));
  EXPECT_THAT(first, Not(HasSubstr("removed")));
  std::string bumped =
      RunOnce(TownsDeclaration("own", "own_src", "own_map", "derive_fns.town_upper", 2));
  EXPECT_THAT(bumped, HasSubstr("removed 1 derived document(s) of other versions"));
  EXPECT_EQ(couchdb::StringView(Get("/own_map/own_src:note")["text"]), "keep me");
  EXPECT_EQ(Get("/own_map/own_src:other")["mr_version"].GetInt(), 1);
  int rows_of_version_2 = 0;
  for (auto& [id, doc] : Derived("own_map")) {
    if (doc.HasMember("mr_key") && couchdb::ToJson(doc["mr_key"]) == "\"OSLO\"") {
      rows_of_version_2 += doc["mr_version"].GetInt() == 2;
    }
  }
  EXPECT_EQ(rows_of_version_2, 1);
}

// A handler that yields nothing for a whole source (item("town") over documents spelling it
// "twn") printed "0 written" and exited 0, an empty target looking like success (a CLI
// probe). A run from the start says so; a later run whose new documents yield nothing does not.
TEST_F(DeriveTest, ARunFromTheStartThatYieldsNoRowIsWarnedOf) {
  Fill("norow_src", R"([{"_id":"a","twn":"Oslo"},{"_id":"b","twn":"Bergen"}])");
  const std::string declaration = TownsDeclaration("norow", "norow_src", "norow_map");
  std::string first = RunOnce(declaration);
  EXPECT_THAT(first, HasSubstr("norow_src -> norow_map: warning: derive_fns.town yielded no row "
                               "for any of the 2 change(s) read from the start of norow_src"));
  EXPECT_THAT(first, HasSubstr("cnp map 'derive_fns.town' DOC.json"));
  Write("norow_src", R"([{"_id":"c","town":"Molde"},{"_id":"d","twn":"Alta"}])");
  EXPECT_THAT(RunOnce(declaration), Not(HasSubstr("yielded no row")));
  // Rows from the start: no warning.
  Fill("somerow_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","twn":"Bergen"}])");
  EXPECT_THAT(RunOnce(TownsDeclaration("somerow", "somerow_src", "somerow_map")),
              Not(HasSubstr("yielded no row")));
}

// Two instances of different names deriving one source into one target wrote the same ids, and
// each swept the other's rows of another version, both reporting success (a CLI probe). The
// first to run claims the pair; another name is refused, told how to hand the claim over, and
// the rows stay as the first made them. Another source into the same target is no conflict.
TEST_F(DeriveTest, AnInstanceOfAnotherNameIsRefusedASourceAndTargetAlreadyClaimed) {
  Fill("claim_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"}])");
  RunOnce(TownsDeclaration("claima", "claim_src", "claim_map"));
  absl::StatusOr<Exited> other = RunToExit(
      Command(Declare(TownsDeclaration("claimb", "claim_src", "claim_map",
                                       "derive_fns.town_upper", 2)),
              {"--once"}),
      "cnp derive");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->exit_code, 1) << other->output;
  EXPECT_THAT(other->output,
              HasSubstr("claim_src -> claim_map: the instance named claima derives claim_src into "
                        "claim_map (its claim: _local/cnp-derive-claim:claim_src in claim_map)"));
  EXPECT_THAT(other->output, HasSubstr("delete the claim and run again"));
  EXPECT_THAT(ByKey("claim_map"), ::testing::UnorderedElementsAre(
                                      ::testing::Key("\"Oslo\""), ::testing::Key("\"Bergen\"")));
  // The same name again, as a later run of it: its own claim.
  EXPECT_THAT(RunOnce(TownsDeclaration("claima", "claim_src", "claim_map")),
              Not(HasSubstr("the instance named")));
  Fill("claim_src2", R"([{"_id":"c","town":"Molde"}])");
  RunOnce(TownsDeclaration("claimc", "claim_src2", "claim_map"));
  EXPECT_EQ(ByKey("claim_map").size(), 3u);

  // Refused at its second stage, a run claims nothing: every claim is read before any is
  // written (a review: the first stage's claim, written in its name, then refused the
  // instance it had been told to become).
  Fill("claim_src3", R"([{"_id":"d","town":"Alta"}])");
  const std::string two_stages = absl::StrCat(
      "name: claimd\nhandlers:\n  claim_map3:\n    claim_src3: {type: map, version: 1, handler: "
      "derive_fns.town}\n  claim_map:\n    claim_src: {type: map, version: 1, handler: "
      "derive_fns.town}\n");
  absl::StatusOr<Exited> refused =
      RunToExit(Command(Declare(two_stages), {"--once"}), "cnp derive");
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->exit_code, 1) << refused->output;
  EXPECT_THAT(refused->output, HasSubstr("the instance named claima derives claim_src"));
  auto claim3 = Http().Get("/claim_map3/_local/cnp-derive-claim%3Aclaim_src3");
  ASSERT_TRUE(claim3.ok()) << claim3.status();
  EXPECT_EQ(claim3->status, 404) << claim3->body;
}

TEST_F(DeriveTest, AVersionBumpRerunsTheStageAndRemovesTheOldVersionsDocuments) {
  Fill("ver_src", R"([{"_id":"a","town":"Oslo","n":3},{"_id":"b","town":"Bergen","n":5}])");
  RunOnce(TownsDeclaration("ver", "ver_src", "ver_map"));
  ASSERT_EQ(Derived("ver_map").size(), 2u);
  std::string out = RunOnce(TownsDeclaration("ver", "ver_src", "ver_map", "derive_fns.town_upper", 2));
  EXPECT_THAT(out, HasSubstr("version 1 -> 2, re-running over ver_src from the start"));
  EXPECT_THAT(out, HasSubstr("removed 2 derived document(s) of other versions"));
  EXPECT_THAT(ByKey("ver_map"),
              ::testing::UnorderedElementsAre(
                  ::testing::Pair("\"OSLO\"", HasSubstr(R"("size":3)")),
                  ::testing::Pair("\"BERGEN\"", HasSubstr(R"("size":5)"))));
  for (auto& [id, doc] : Derived("ver_map")) EXPECT_EQ(doc["mr_version"].GetInt(), 2);
}

// A version change saves its checkpoint (the new version, from the start) before it writes a
// row. It was saved only with the first batch's: a run of version 2 stopped between the two
// left rows of version 2 under a checkpoint of version 1, which a run of version 1 (taking
// turns in a rolling deploy) resumed from as caught up, keeping them for good; the other way
// round, a sweep removed rows a run of the other version had just written (found by a probe).
// Here the checkpoint's write fails, as a run stopped there would have it.
TEST_F(DeriveTest, AVersionChangeIsCheckpointedBeforeAnyRowIsWritten) {
  Fill("vcut_src", R"([{"_id":"a","town":"Oslo","n":3},{"_id":"b","town":"Bergen","n":5}])");
  const std::string v1 = TownsDeclaration("vcut", "vcut_src", "vcut_map");
  RunOnce(v1);
  ASSERT_EQ(Derived("vcut_map").size(), 2u);
  std::string proxy_url;
  auto proxy = StartProxy({R"(fake:PUT /vcut_map/_local/cnp-derive%3Avcut%3Asource%3Avcut_src=500:)"
                           R"({"error":"unknown_error","reason":"disk full"})"},
                          proxy_url);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  std::vector<std::string> v2 = Command(
      Declare(TownsDeclaration("vcut", "vcut_src", "vcut_map", "derive_fns.town_upper", 2)), {"--once"});
  v2[v2.size() - 2] = proxy_url;
  absl::StatusOr<Exited> cut = RunToExit(v2, "cnp derive");
  ASSERT_TRUE(cut.ok()) << cut.status();
  EXPECT_EQ(cut->exit_code, 1) << cut->output;
  EXPECT_THAT(cut->output, HasSubstr("disk full"));
  // Version 1 again: what it finds is its own.
  std::string out = RunOnce(v1);
  for (auto& [id, doc] : Derived("vcut_map")) {
    EXPECT_EQ(doc["mr_version"].GetInt(), 1) << id << " " << couchdb::ToJson(doc) << "\n" << out;
  }
  EXPECT_THAT(ByKey("vcut_map"), ::testing::UnorderedElementsAre(
                                     ::testing::Pair("\"Oslo\"", HasSubstr(R"("mr_source_id":"a")")),
                                     ::testing::Pair("\"Bergen\"", HasSubstr(R"("mr_source_id":"b")"))));
  // And version 2 once its checkpoint can be written: all of it, none of version 1.
  out = RunOnce(TownsDeclaration("vcut", "vcut_src", "vcut_map", "derive_fns.town_upper", 2));
  EXPECT_THAT(ByKey("vcut_map"),
              ::testing::UnorderedElementsAre(::testing::Pair("\"OSLO\"", HasSubstr(R"("size":3)")),
                                              ::testing::Pair("\"BERGEN\"", HasSubstr(R"("size":5)"))));
  for (auto& [id, doc] : Derived("vcut_map")) EXPECT_EQ(doc["mr_version"].GetInt(), 2) << out;
}

// The sweep after a version bump reads the derived documents in pages of 1000. Each page began
// at the last id of the one before with skip=1; that row had just been deleted, so _all_docs no
// longer listed it and skip=1 passed over the first row after it, which kept its old version
// for good (found by a review). Version 2 yields no rows, so every row of version 1 goes.
TEST_F(DeriveTest, TheSweepAfterAVersionBumpRemovesEveryOldRowAcrossPages) {
  std::string docs = "[";
  for (int i = 0; i < 1001; ++i) absl::StrAppend(&docs, i > 0 ? "," : "", R"({"_id":"d)", i, R"(","town":"T)", i, R"("})");
  Fill("sweep_src", docs + "]");
  RunOnce(TownsDeclaration("sweep", "sweep_src", "sweep_map"), {"--batch-size=1001"});
  ASSERT_EQ(Derived("sweep_map").size(), 1001u);
  std::string out = RunOnce(TownsDeclaration("sweep", "sweep_src", "sweep_map", "derive_fns.given_rows", 2),
                            {"--batch-size=1001"});
  EXPECT_THAT(out, HasSubstr("removed 1001 derived document(s) of other versions"));
  std::map<std::string, rapidjson::Document> left = Derived("sweep_map");
  EXPECT_EQ(left.size(), 0u) << (left.empty() ? "" : couchdb::ToJson(left.begin()->second));
}

// A value's (or reduce result's) fields starting with mr_ or _ cannot be written (the provenance
// must stay true; the database refuses or obeys _ fields): they were left out with nothing said
// (found by a review). Now each stage says which, once per run; a whole source document as the
// value (its _id and _rev) gives no warning.
TEST_F(DeriveTest, FieldsADerivedDocumentCannotHoldAreNamedInAWarning) {
  Fill("resv_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"}])");
  std::string out = RunOnce(R"(name: resv
handlers:
  resv_map:
    resv_src: {type: map, version: 1, handler: derive_fns.reserved_fields}
  resv_count:
    resv_map: {type: reduce, version: 1, handler: derive_fns.reserved_result}
)");
  const std::string map_warning =
      "resv_src -> resv_map: warning: derive_fns.reserved_fields returned fields of its rows' values "
      "that derived documents cannot hold (_secret, mr_total)";
  EXPECT_THAT(out, HasSubstr(map_warning));
  EXPECT_EQ(out.find(map_warning), out.rfind(map_warning)) << out;  // once, for two documents
  EXPECT_THAT(out, HasSubstr("resv_map -> resv_count: warning: derive_fns.reserved_result returned a "
                             "field of its result that derived documents cannot hold (mr_count)"));
  for (auto& [id, doc] : Derived("resv_map")) {
    EXPECT_EQ(doc["kept"].GetInt(), 2);
    EXPECT_FALSE(doc.HasMember("mr_total"));
  }
  for (auto& [id, doc] : Derived("resv_count")) EXPECT_EQ(doc["count"].GetInt(), 1);

  Fill("whole_src", R"([{"_id":"a","town":"Oslo"}])");
  out = RunOnce(TownsDeclaration("whole", "whole_src", "whole_map", "derive_fns.whole"));
  EXPECT_THAT(out, Not(HasSubstr("cannot hold")));
  ASSERT_EQ(Derived("whole_map").size(), 1u);
}

// The version, not the handler, says when a stage re-runs (qvarn-mr's rule): a handler changed
// without a bump was taken with nothing said, and the old rows stayed (found by a review).
TEST_F(DeriveTest, AHandlerChangedWithoutAVersionBumpIsWarnedOf) {
  Fill("hchg_src", R"([{"_id":"a","town":"Oslo","n":3}])");
  RunOnce(TownsDeclaration("hchg", "hchg_src", "hchg_map"));
  std::string out = RunOnce(TownsDeclaration("hchg", "hchg_src", "hchg_map", "derive_fns.town_upper"));
  EXPECT_THAT(out, HasSubstr("hchg_src -> hchg_map: warning: the handler changed (derive_fns.town -> "
                             "derive_fns.town_upper) but the version is still 1"));
  EXPECT_THAT(out, HasSubstr("bump the version to re-run over hchg_src from the start"));
  EXPECT_THAT(out, Not(HasSubstr("re-running over")));
  EXPECT_THAT(ByKey("hchg_map"), ::testing::ElementsAre(::testing::Pair("\"Oslo\"", ::testing::_)));
}

TEST_F(DeriveTest, AHandlerErrorOnOneDocumentIsRecordedAndTheOthersGoOn) {
  Fill("err_src", R"([{"_id":"a","town":"Oslo"},{"_id":"bad1","town":"X","bad":true},{"_id":"c","town":"Bergen"}])");
  std::string out = RunOnce(TownsDeclaration("err", "err_src", "err_map", "derive_fns.fragile"));
  EXPECT_THAT(out, HasSubstr("derive_fns.fragile failed on bad1: ValueError: bad document bad1"));
  EXPECT_THAT(out, HasSubstr("1 document error(s)"));
  std::multimap<std::string, std::string> rows = ByKey("err_map");
  EXPECT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows.count("\"X\""), 0u);
  rapidjson::Document errors = Get("/err_map/_local/cnp-derive%3Aerr%3Aerrors");
  ASSERT_TRUE(errors.HasMember("errors")) << couchdb::ToJson(errors);
  ASSERT_EQ(errors["errors"].Size(), 1u);
  const auto& e = errors["errors"][0];
  EXPECT_EQ(std::string(e["doc_id"].GetString()), "bad1");
  EXPECT_EQ(std::string(e["handler"].GetString()), "derive_fns.fragile");
  EXPECT_EQ(std::string(e["type"].GetString()), "ValueError");
  // The message, then where the handler raised it.
  EXPECT_THAT(std::string(e["message"].GetString()),
              ::testing::MatchesRegex(R"(bad document bad1 \(derive_fns\.py:[0-9]+ in fragile\))"));
}

// A handler that raises on every document does not write a line per document: the first 20 of a
// minute are logged, then one line says how many more there were; all are counted.
TEST_F(DeriveTest, HandlerErrorsPastTwentyAMinuteAreCountedNotLogged) {
  std::string docs = "[";
  for (int i = 0; i < 25; ++i) absl::StrAppend(&docs, i ? "," : "", R"({"_id":"bad)", i, R"(","town":"X","bad":true})");
  Fill("many_err_src", docs + "]");
  std::string out = RunOnce(TownsDeclaration("many", "many_err_src", "many_err_map", "derive_fns.fragile"));
  int logged = 0;
  for (size_t at = out.find("failed on bad"); at != std::string::npos; at = out.find("failed on bad", at + 1)) ++logged;
  EXPECT_EQ(logged, 20) << out;
  EXPECT_THAT(out, HasSubstr("5 more document error(s) not logged (at most 20 a minute are)"));
  EXPECT_THAT(out, HasSubstr("25 document error(s)"));
}

// A document the handler is too slow for (past --timeout) is found by mapping the batch again
// one document at a time, recorded as its error (Timeout), and passed; the others are derived. (The run ended
// with "Deadline Exceeded", naming no document, and every run after it met the same batch.)
TEST_F(DeriveTest, ADocumentTheHandlerIsTooSlowForIsRecordedAsATimeoutAndTheOthersGoOn) {
  Fill("slow_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"X","sleep":30},{"_id":"c","town":"Bergen"}])");
  std::string out = RunOnce(TownsDeclaration("slow", "slow_src", "slow_map", "derive_fns.slow_town"), {"--timeout=1s"});
  EXPECT_THAT(out, HasSubstr("a Map call of 3 documents ran past --timeout (1s); made again one document at a time"));
  EXPECT_THAT(out, HasSubstr("1 document error(s)"));
  std::multimap<std::string, std::string> rows = ByKey("slow_map");
  EXPECT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows.count("\"X\""), 0u);
  rapidjson::Document errors = Get("/slow_map/_local/cnp-derive%3Aslow%3Aerrors");
  ASSERT_TRUE(errors.HasMember("errors")) << couchdb::ToJson(errors);
  ASSERT_EQ(errors["errors"].Size(), 1u);
  EXPECT_EQ(std::string(errors["errors"][0]["doc_id"].GetString()), "b");
  EXPECT_EQ(std::string(errors["errors"][0]["type"].GetString()), "Timeout");
}

// Found by a review: a batch of one document the handler is too slow for (the only change, or
// a large one in a call of its own) had no answered call to show that the service answers, and
// failed the run, checkpoint unmoved, on every run after: the stage stopped for good. A Resolve
// shows the service answers, and the document is its own Timeout.
TEST_F(DeriveTest, ALoneDocumentTheHandlerIsTooSlowForIsRecordedAndTheRunGoesPastIt) {
  Fill("lone_slow_src", R"([{"_id":"b","town":"X","sleep":30}])");
  const std::string declaration =
      Declare(TownsDeclaration("lone_slow", "lone_slow_src", "lone_slow_map", "derive_fns.slow_town"));
  absl::StatusOr<Exited> run = RunToExit(Command(declaration, {"--once", "--timeout=1s"}), ": caught up");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 3) << run->output;
  rapidjson::Document errors = Get("/lone_slow_map/_local/cnp-derive%3Alone_slow%3Aerrors");
  ASSERT_TRUE(errors.HasMember("errors")) << couchdb::ToJson(errors);
  ASSERT_EQ(errors["errors"].Size(), 1u);
  EXPECT_EQ(std::string(errors["errors"][0]["doc_id"].GetString()), "b");
  EXPECT_EQ(std::string(errors["errors"][0]["type"].GetString()), "Timeout");
  // The checkpoint went past it: the next run is clean.
  absl::StatusOr<Exited> again = RunToExit(Command(declaration, {"--once", "--timeout=1s"}), ": caught up");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->exit_code, 0) << again->output;
}

// Found by a review: when the handler is too slow for every document (a dependency gone), the
// batch was halved down to each document alone, 2N - 1 calls each waiting --timeout (hours for
// a batch of 500), with the lease renewed all along. Now, once a Resolve shows that the service
// answers, the documents are tried one at a time, and three unanswered with none answered end
// the run: the handler was started on the batch's first document, then on three alone.
TEST_F(DeriveTest, ABatchTheHandlerIsTooSlowForIsGivenUpAfterThreeDocumentsAlone) {
  const std::string log = absl::StrCat(dir_, "/started.log");
  std::string docs = "[";
  for (int i = 0; i < 8; ++i) {
    absl::StrAppend(&docs, i ? "," : "", R"({"_id":"s)", i, R"(","town":"T","sleep":30,"log":")", log, "\"}");
  }
  Fill("stuck_src", docs + "]");
  absl::StatusOr<Exited> run = RunToExit(
      Command(Declare(TownsDeclaration("stuck", "stuck_src", "stuck_map", "derive_fns.logged_slow_town")),
              {"--once", "--timeout=1s"}),
      "cnp derive");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1) << run->output;
  EXPECT_THAT(run->output, HasSubstr("no call for this batch of 8 document(s) was answered within --timeout"));
  std::ifstream started(log);
  std::vector<std::string> ids;
  for (std::string line; std::getline(started, line);) ids.push_back(line);
  EXPECT_THAT(ids, ElementsAre("s0", "s0", "s1", "s2"));
}

// A row CouchDB could not store (a key holding a lone surrogate) is that document's error; the
// run goes on (it ended with "the service answered map rows that are not ...").
TEST_F(DeriveTest, ARowThatCannotBeStoredIsItsDocumentsErrorAndTheOthersGoOn) {
  Fill("lone_src", R"([{"_id":"a","town":"Oslo"},{"_id":"lone1","town":"X","lone":true},{"_id":"c","town":"Bergen"}])");
  std::string out =
      RunOnce(TownsDeclaration("lone", "lone_src", "lone_map", "derive_fns.lone_surrogate"));
  EXPECT_THAT(out, HasSubstr("derive_fns.lone_surrogate failed on lone1: UnwritableRow"));
  EXPECT_THAT(out, HasSubstr("1 document error(s)"));
  std::multimap<std::string, std::string> rows = ByKey("lone_map");
  EXPECT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows.count("\"Oslo\""), 1u);
  EXPECT_EQ(rows.count("\"Bergen\""), 1u);
}

// Ten documents of 7 MB, each well under CouchDB's 8 MB limit, make one batch of changes longer
// than the 64 MiB cnp derive reads in one answer, and a Map call longer than cnp-server takes:
// the batch is read in smaller parts and mapped in parts, and every document is derived.
// (Before, every run ended with "exceeded 67108864 bytes".)
TEST_F(DeriveTest, LargeDocumentsWhoseBatchPassesTheAnswerLimitAreAllDerived) {
  ASSERT_NO_FATAL_FAILURE(FillLarge("large_src"));
  Write("large_src", R"([{"_id":"small","town":"Lima"}])");
  std::string out = RunOnce(TownsDeclaration("large", "large_src", "large_map"));
  EXPECT_THAT(out, HasSubstr("seq 11, 11 change(s)"));
  EXPECT_THAT(out, Not(HasSubstr("exceeded")));
  EXPECT_THAT(out, Not(HasSubstr("failed on")));
  std::multimap<std::string, std::string> rows = ByKey("large_map");
  EXPECT_EQ(rows.size(), 11u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(rows.count(absl::StrCat("\"Town", i, "\"")), 1u) << i;
}

// Derived documents as large as their sources (the handler yields the whole document): the
// lookup of a re-run's rows and the sweep of the old version's rows read pages too long for one
// answer, and ask again for fewer. (Before, the sweep failed with "exceeded ... bytes".)
TEST_F(DeriveTest, LargeDerivedDocumentsAreLookedUpAndSweptInSmallerPages) {
  ASSERT_NO_FATAL_FAILURE(FillLarge("wide_src"));
  std::string out = RunOnce(TownsDeclaration("wide", "wide_src", "wide_map", "derive_fns.whole"));
  EXPECT_THAT(out, HasSubstr("seq 10, 10 change(s)"));
  ASSERT_EQ(Get("/wide_map/_all_docs")["rows"].Size(), 10u);  // (with their documents: 70 MB)
  // Version 2 derives other rows (upper-case keys); the large rows of version 1 are swept.
  out = RunOnce(TownsDeclaration("wide", "wide_src", "wide_map", "derive_fns.town_upper", 2));
  EXPECT_THAT(out, HasSubstr("removed 10 derived document(s) of other versions"));
  EXPECT_THAT(out, Not(HasSubstr("exceeded")));
  std::multimap<std::string, std::string> rows = ByKey("wide_map");
  ASSERT_EQ(rows.size(), 10u);
  for (const auto& [key, doc] : rows) EXPECT_THAT(doc, Not(HasSubstr("xxxx"))) << key;
}

// Found by a review: the rows a changed document yielded before were read in one answer, never
// paged, so a document with more rows than that answer may hold (--max-couchdb-response-bytes)
// stopped its stage for good. Twenty rows of 100 kB (2 MB) with answers of at most 1 MiB: the
// change that leaves fifteen of them finds all twenty, and removes five.
TEST_F(DeriveTest, TheRowsOfAChangedDocumentAreReadInPagesWhenTheyPassTheAnswerLimit) {
  Fill("many_rows_src", R"([{"_id":"a","town":"Oslo","rows":20,"pad":100000}])");
  const std::string yaml = TownsDeclaration("many_rows", "many_rows_src", "many_rows_map", "derive_fns.padded_rows");
  std::string out = RunOnce(yaml, {"--max-couchdb-response-bytes=1048576"});
  ASSERT_EQ(ByKey("many_rows_map").size(), 20u) << out;
  Write("many_rows_src",
        absl::StrCat(R"([{"_id":"a","_rev":")", Rev("many_rows_src", "a"), R"(","town":"Oslo","rows":15,"pad":100000}])"));
  out = RunOnce(yaml, {"--max-couchdb-response-bytes=1048576"});
  EXPECT_THAT(out, Not(HasSubstr("exceeded")));
  std::multimap<std::string, std::string> rows = ByKey("many_rows_map");
  EXPECT_EQ(rows.size(), 15u) << out;
  for (int i = 0; i < 15; ++i) EXPECT_EQ(rows.count(absl::StrCat("[\"Oslo\",", i, "]")), 1u) << i;
}

// A cnp-server whose calls may carry 100,000 bytes; twelve documents with one small row each,
// three whose rows are about 40,000 bytes each (any two fit in one answer with the small ones,
// all three do not), one whose rows alone are about 120,000 bytes, and one that is itself
// 150,000 bytes long. The batch's Map call is split until its answers fit; each document that
// cannot fit is recorded as that document's handler error, and the checkpoint passes it.
// (Before, every run ended with the server's RESOURCE_EXHAUSTED and derived nothing.)
TEST_F(DeriveTest, RowsPastTheServersAnswerLimitAreMappedInSmallerCallsAndOneDocumentsAreRecorded) {
  std::string docs = "[";
  for (int i = 0; i < 12; ++i) absl::StrAppend(&docs, R"({"_id":"small)", i, R"(","town":"Town)", i, R"("},)");
  for (int i = 0; i < 3; ++i) absl::StrAppend(&docs, R"({"_id":"wide)", i, R"(","town":"Wide)", i, R"(","wide":2},)");
  absl::StrAppend(&docs, R"({"_id":"huge","town":"Huge","wide":6},)");
  absl::StrAppend(&docs, R"({"_id":"fat","town":"Fat","pad":")", std::string(150000, 'x'), R"("}])");
  Fill("limit_src", docs);
  std::string declaration = TownsDeclaration("limit", "limit_src", "limit_map", "derive_fns.heavy");
  std::string out = RunOnce(declaration, {}, small_server_);
  EXPECT_THAT(out, HasSubstr("seq 17, 17 change(s)"));
  EXPECT_THAT(out, HasSubstr("2 document error(s)"));
  EXPECT_THAT(out, HasSubstr("derive_fns.heavy failed on huge: AnswerTooLarge: the rows this document yields "
                             "are larger than cnp-server's answer limit (its --max-call-bytes, 100000 bytes)"));
  EXPECT_THAT(out, HasSubstr("derive_fns.heavy failed on fat: RequestTooLarge: this document is larger than "
                             "cnp-server takes in one call (its --max-call-bytes, 100000 bytes)"));
  std::multimap<std::string, std::string> rows = ByKey("limit_map");
  EXPECT_EQ(rows.size(), 12u + 3u * 3u);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(rows.count(absl::StrCat("\"Town", i, "\"")), 1u) << i;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(rows.count(absl::StrCat("\"Wide", i, "\"")), 1u) << i;
    EXPECT_EQ(rows.count(absl::StrCat("[\"Wide", i, "\",1]")), 1u) << i;
  }
  EXPECT_EQ(rows.count("\"Huge\""), 0u);
  EXPECT_EQ(rows.count("\"Fat\""), 0u);
  rapidjson::Document errors = Errors("limit_map", "limit");
  ASSERT_TRUE(errors.HasMember("errors")) << couchdb::ToJson(errors);
  std::map<std::string, std::string> types;  // doc_id -> type
  for (const auto& e : errors["errors"].GetArray()) {
    types[e["doc_id"].GetString()] = e["type"].GetString();
    EXPECT_EQ(std::string(e["handler"].GetString()), "derive_fns.heavy");
    EXPECT_THAT(std::string(e["message"].GetString()), HasSubstr("--max-call-bytes"));
  }
  EXPECT_EQ(types, (std::map<std::string, std::string>{{"fat", "RequestTooLarge"}, {"huge", "AnswerTooLarge"}}));
  rapidjson::Document checkpoint = Get("/limit_map/_local/cnp-derive%3Alimit%3Asource%3Alimit_src");
  EXPECT_EQ(couchdb::ToJson(checkpoint["seq"]), "\"17\"");

  // Made narrower, the document is derived like any other.
  Write("limit_src", absl::StrCat(R"([{"_id":"huge","_rev":")", Rev("limit_src", "huge"),
                                  R"(","town":"Huge","wide":1}])"));
  out = RunOnce(declaration, {}, small_server_);
  EXPECT_THAT(out, HasSubstr("seq 18, 1 change(s)"));
  EXPECT_THAT(out, Not(HasSubstr("failed on")));
  rows = ByKey("limit_map");
  EXPECT_EQ(rows.count("\"Huge\""), 1u);
  EXPECT_EQ(rows.count("[\"Huge\",0]"), 1u);
}

// A reduce result past the server's answer limit, and a key whose rows together pass what a call
// may carry (two rows of 60,000 bytes), are each recorded as the error of their key; the other
// keys are reduced and the run goes on. (Before, the run ended with RESOURCE_EXHAUSTED.)
TEST_F(DeriveTest, AReduceCallPastTheServersLimitIsRecordedAsItsKeysError) {
  const std::string pad(60000, 'x');
  Fill("padred_src", absl::StrCat(R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Huge"},{"_id":"c","town":"Oslo"},
                                      {"_id":"d","town":"Bergen"},{"_id":"e","town":"Crowd","pad":")", pad,
                                  R"("},{"_id":"f","town":"Crowd","pad":")", pad, R"("}])"));
  std::string yaml = R"(name: padred
handlers:
  padred_map:
    padred_src: {type: map, version: 1, handler: derive_fns.town_pad}
  padred_count:
    padred_map: {type: reduce, version: 1, handler: derive_fns.count_or_pad}
)";
  std::string out = RunOnce(yaml, {}, small_server_);
  EXPECT_THAT(out, HasSubstr("derive_fns.count_or_pad failed on key \"Huge\": AnswerTooLarge: the result of this "
                             "key is larger than cnp-server's answer limit (its --max-call-bytes, 100000 bytes)"));
  EXPECT_THAT(out, HasSubstr("derive_fns.count_or_pad failed on key \"Crowd\": RequestTooLarge: the rows of this "
                             "key are more than cnp-server takes in one call (its --max-call-bytes, 100000 bytes)"));
  // Every map row was written (the Map call of the two large ones was split).
  EXPECT_EQ(ByKey("padred_map").size(), 6u);
  std::map<std::string, int> counts;
  for (auto& [id, doc] : Derived("padred_count")) counts[doc["mr_key"].GetString()] = doc["mr_value"].GetInt();
  EXPECT_EQ(counts, (std::map<std::string, int>{{"Bergen", 1}, {"Oslo", 2}}));
  rapidjson::Document errors = Errors("padred_count", "padred");
  ASSERT_TRUE(errors.HasMember("errors")) << couchdb::ToJson(errors);
  std::map<std::string, std::string> types;  // doc_id -> type
  for (const auto& e : errors["errors"].GetArray()) types[e["doc_id"].GetString()] = e["type"].GetString();
  EXPECT_EQ(types, (std::map<std::string, std::string>{{"key \"Crowd\"", "RequestTooLarge"},
                                                       {"key \"Huge\"", "AnswerTooLarge"}}));
}

// Found by a review: a Reduce call past --timeout on one key ended the run, and every run after
// it met the same key, so the reduce stage never went on. It is that key's error (Timeout), as a
// map stage's slow document is; the other keys are reduced.
TEST_F(DeriveTest, AReduceKeyTheHandlerIsTooSlowForIsRecordedAsATimeoutAndTheOthersGoOn) {
  Fill("slowred_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Slow"},{"_id":"c","town":"Oslo"},
                          {"_id":"d","town":"Bergen"}])");
  std::string yaml = R"(name: slowred
handlers:
  slowred_map:
    slowred_src: {type: map, version: 1, handler: derive_fns.town_pad}
  slowred_count:
    slowred_map: {type: reduce, version: 1, handler: derive_fns.count_or_sleep}
)";
  std::string out = RunOnce(yaml, {"--timeout=1s"});
  EXPECT_THAT(out, HasSubstr("derive_fns.count_or_sleep failed on key \"Slow\": Timeout"));
  std::map<std::string, int> counts;
  for (auto& [id, doc] : Derived("slowred_count")) counts[doc["mr_key"].GetString()] = doc["mr_value"].GetInt();
  EXPECT_EQ(counts, (std::map<std::string, int>{{"Bergen", 1}, {"Oslo", 2}}));
  rapidjson::Document errors = Errors("slowred_count", "slowred");
  ASSERT_TRUE(errors.HasMember("errors")) << couchdb::ToJson(errors);
  ASSERT_EQ(errors["errors"].Size(), 1u);
  EXPECT_EQ(std::string(errors["errors"][0]["doc_id"].GetString()), "key \"Slow\"");
  EXPECT_EQ(std::string(errors["errors"][0]["type"].GetString()), "Timeout");
}

TEST_F(DeriveTest, JoinMergesTheRowsOfTwoSourcesByKey) {
  Fill("orgs", R"([{"_id":"o1","name":"Acme"},{"_id":"o2","name":"Beta"}])");
  Fill("reports", R"([{"_id":"r1","org":"o1","title":"Q1"},{"_id":"r2","org":"o2","title":"Q2"}])");
  std::string yaml = R"(name: join
handlers:
  company_reports__map:
    orgs: {type: map, version: 1, handler: derive_fns.org_key}
    reports: {type: map, version: 1, handler: derive_fns.report_org}
  company_reports:
    company_reports__map: {type: reduce, version: 1, handler: derive_fns.company, sources: true}
)";
  RunOnce(yaml);
  EXPECT_THAT(ByKey("company_reports"),
              ::testing::UnorderedElementsAre(
                  ::testing::Pair("\"o1\"", HasSubstr(R"("org_id":"o1","name":"Acme","report_id":"r1","title":"Q1")")),
                  ::testing::Pair("\"o2\"", HasSubstr(R"("org_id":"o2","name":"Beta","report_id":"r2","title":"Q2")"))));
  // A report moves to another org: both orgs' joins are redone.
  Write("reports", absl::StrCat(R"([{"_id":"r2","_rev":")", Rev("reports", "r2"), R"(","org":"o1","title":"Q2b"}])"));
  RunOnce(yaml);
  std::multimap<std::string, std::string> joined = ByKey("company_reports");
  ASSERT_EQ(joined.count("\"o1\""), 1u);
  ASSERT_EQ(joined.count("\"o2\""), 1u);
  EXPECT_THAT(joined.find("\"o1\"")->second, HasSubstr(R"("report_id":"r2","title":"Q2b")"));
  EXPECT_THAT(joined.find("\"o2\"")->second, Not(HasSubstr("report_id")));

  // An org is renamed: its map row (o1, null) stays the same but for the source's revision, so
  // the join of o1 is redone with the new name. (Before, the map target did not change, the
  // reduce stage never ran, and company_reports kept "Acme" for good; found by a review.)
  Write("orgs", absl::StrCat(R"([{"_id":"o1","_rev":")", Rev("orgs", "o1"), R"(","name":"Acme Corp"}])"));
  RunOnce(yaml);
  joined = ByKey("company_reports");
  ASSERT_EQ(joined.count("\"o1\""), 1u);
  EXPECT_THAT(joined.find("\"o1\"")->second, HasSubstr(R"("org_id":"o1","name":"Acme Corp")"));
  EXPECT_THAT(joined.find("\"o1\"")->second, HasSubstr(R"("report_id":"r2","title":"Q2b")"));
  // Each map row says which revision of its source it was derived from.
  for (auto& [id, row] : Derived("company_reports__map")) {
    const std::string source = row["mr_source_type"].GetString();
    ASSERT_TRUE(row.HasMember("mr_source_rev")) << couchdb::ToJson(row);
    EXPECT_EQ(std::string(row["mr_source_rev"].GetString()), Rev(source, row["mr_source_id"].GetString())) << id;
  }
}

// A map target read by no reduce stage with `sources: true` has no mr_source_rev: a change of a
// source document that leaves its rows as they are writes nothing.
TEST_F(DeriveTest, RowsCarryTheSourceRevisionOnlyForAJoin) {
  Fill("norev_src", R"([{"_id":"a","town":"Oslo","n":1}])");
  std::string declaration = TownsDeclaration("norev", "norev_src", "norev_map");
  RunOnce(declaration);
  std::map<std::string, rapidjson::Document> rows = Derived("norev_map");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_FALSE(rows.begin()->second.HasMember("mr_source_rev")) << couchdb::ToJson(rows.begin()->second);
  Write("norev_src", absl::StrCat(R"([{"_id":"a","_rev":")", Rev("norev_src", "a"), R"(","town":"Oslo","n":2}])"));
  EXPECT_THAT(RunOnce(declaration), ::testing::ContainsRegex(R"(seq 2, 1 change\(s\) \([0-9]+/s\), 0 written)"));
}

TEST_F(DeriveTest, AReduceTargetIsKeptRightIncrementally) {
  Fill("red_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"},{"_id":"c","town":"Oslo"}])");
  std::string yaml = TownCountDeclaration("red", "red_src");
  RunOnce(yaml);
  auto counts = [&] { return TownCounts("red_count"); };
  EXPECT_EQ(counts(), (std::map<std::string, int>{{"Bergen", 1}, {"Oslo", 2}}));
  // b leaves Bergen (its group goes away), c moves to Tromso, a new Oslo document arrives.
  Write("red_src", absl::StrCat(R"([{"_id":"b","_rev":")", Rev("red_src", "b"), R"(","_deleted":true},)",
                                R"({"_id":"c","_rev":")", Rev("red_src", "c"), R"(","town":"Tromso"},)",
                                R"({"_id":"d","town":"Oslo"},{"_id":"e","town":"Oslo"}])"));
  RunOnce(yaml);
  EXPECT_EQ(counts(), (std::map<std::string, int>{{"Oslo", 3}, {"Tromso", 1}}));
}

// A map row deleted by hand (DELETE, whose tombstone has no mr_key) takes its row out of its
// key's reduce document all the same: the key is read from the revision before the deletion.
// Once that revision is compacted away, the row's deletion is recorded (UnknownKey), not passed
// in silence. Before, both left the reduce document counting the row.
TEST_F(DeriveTest, AMapRowDeletedByHandIsTakenOutOfItsReduceDocument) {
  Fill("hand_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"},{"_id":"c","town":"Oslo"},)"
                   R"({"_id":"d","town":"Lima"}])");
  const std::string yaml = TownCountDeclaration("hand", "hand_src");
  RunOnce(yaml);
  auto counts = [&] { return TownCounts("hand_count"); };
  ASSERT_EQ(counts(), (std::map<std::string, int>{{"Bergen", 1}, {"Lima", 1}, {"Oslo", 2}}));
  auto row_of = [&](const std::string& source_id) {
    for (auto& [id, doc] : Derived("hand_map")) {
      if (doc["mr_source_id"].GetString() == source_id) return id;
    }
    return std::string();
  };
  couchdb::CouchClient http = Http();
  auto delete_by_hand = [&](const std::string& source_id) {
    const std::string id = row_of(source_id);
    ASSERT_FALSE(id.empty());
    auto deleted = http.Delete(absl::StrCat("/hand_map/", couchdb::CouchClient::EscapeSegment(id),
                                            "?rev=", Rev("hand_map", couchdb::CouchClient::EscapeSegment(id))));
    ASSERT_TRUE(deleted.ok() && deleted->status == 200) << (deleted.ok() ? deleted->body : deleted.status().ToString());
  };

  delete_by_hand("c");
  RunOnce(yaml);
  EXPECT_EQ(counts(), (std::map<std::string, int>{{"Bergen", 1}, {"Lima", 1}, {"Oslo", 1}}));

  delete_by_hand("d");
  auto compacted = http.Post("/hand_map/_compact", "{}");
  ASSERT_TRUE(compacted.ok() && compacted->status / 100 == 2) << (compacted.ok() ? compacted->body : compacted.status().ToString());
  absl::StatusOr<Exited> run = RunToExit(Command(Declare(yaml), {"--once"}), "cnp derive");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 3) << run->output;
  EXPECT_THAT(run->output, HasSubstr("is gone (compacted)"));
  const rapidjson::Document errors = Errors("hand_count", "hand");
  EXPECT_THAT(couchdb::ToJson(errors), HasSubstr("UnknownKey"));
}

// A cluster's _find reads one copy of each shard range, which may not have had a row written a
// moment ago: the group is read again until it shows the batch's changes, and when it never
// does the batch is given up (nothing written or checkpointed), not reduced without the row.
TEST_F(DeriveTest, AReduceReadsAKeysRowsAgainUntilTheyShowTheBatchsChanges) {
  Fill("behind_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Oslo"},{"_id":"c","town":"Lima"}])");
  const std::string yaml = TownCountDeclaration("behind", "behind_src");
  auto counts = [&] { return TownCounts("behind_count"); };
  auto through_proxy = [&](const std::string& stale) -> absl::StatusOr<Exited> {
    std::string proxy_url;
    auto proxy = StartProxy({"stalefind:" + stale}, proxy_url);
    if (!proxy.ok()) return proxy.status();
    std::vector<std::string> argv = Command(Declare(yaml), {"--once"});
    argv[argv.size() - 2] = proxy_url;
    return RunToExit(argv, "cnp derive");
  };

  // Behind for two reads: the third shows every row.
  absl::StatusOr<Exited> run = through_proxy("2");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->output;
  EXPECT_EQ(counts(), (std::map<std::string, int>{{"Lima", 1}, {"Oslo", 2}}));

  // Behind for good: the batch is not reduced without the row.
  Write("behind_src", R"([{"_id":"d","town":"Oslo"}])");
  run = through_proxy("1000");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1) << run->output;
  EXPECT_THAT(run->output, HasSubstr("a copy of the database behind the others"));
  EXPECT_EQ(counts(), (std::map<std::string, int>{{"Lima", 1}, {"Oslo", 2}}));
  // Caught up, the next run reduces it.
  run = RunToExit(Command(Declare(yaml), {"--once"}), "cnp derive");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->output;
  EXPECT_EQ(counts(), (std::map<std::string, int>{{"Lima", 1}, {"Oslo", 3}}));
}

TEST_F(DeriveTest, TwoInstancesShareOneLeaseAndTheSecondTakesOverWhenTheFirstStopsRenewing) {
  Fill("lease_src", R"([{"_id":"a","town":"Oslo"}])");
  std::string declaration = Declare(TownsDeclaration("lease", "lease_src", "lease_map"));
  // A lease timeout far above the renewal interval: a loaded machine must not let a live
  // holder's lease expire.
  std::vector<std::string> follow = {"--lease-timeout=10s", "--lease-renew=500ms", "--poll-interval=500ms"};
  auto first = ChildProcess::Start(Command(declaration, follow), dir_, "holding the lease", kRunTimeout);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE((*first)->WaitForOutput("seq 1, 1 change(s)", kRunTimeout)) << (*first)->output();
  auto second = ChildProcess::Start(Command(declaration, follow), dir_, "waiting for the lease", kRunTimeout);
  ASSERT_TRUE(second.ok()) << second.status();

  Write("lease_src", R"([{"_id":"b","town":"Bergen"}])");
  ASSERT_TRUE((*first)->WaitForOutput("seq 2, 2 change(s)", kRunTimeout)) << (*first)->output();
  EXPECT_THAT((*second)->output(), Not(HasSubstr("holding the lease")));

  // The holder dies without a word: the other takes over once the lease has expired, and goes
  // on from the checkpoint (one new change, not three).
  ASSERT_EQ(kill((*first)->pid(), SIGKILL), 0);
  ASSERT_TRUE((*second)->WaitForOutput("holding the lease", kRunTimeout)) << (*second)->output();
  Write("lease_src", R"([{"_id":"c","town":"Tromso"}])");
  ASSERT_TRUE((*second)->WaitForOutput("seq 3, 1 change(s)", kRunTimeout)) << (*second)->output();
  EXPECT_EQ(Derived("lease_map").size(), 3u);
}

// Instances of one name whose declarations differ (a rolling deploy that adds a target sorting
// first) share targets: they must take turns. Before, the lease lived in the first target by
// name alone, so the second instance's lease was in aaa_turn_cnt, not turn_cnt: both held "the
// lease", both wrote turn_map and turn_cnt, and their checkpoints conflicted.
TEST_F(DeriveTest, InstancesWhoseTargetsDifferButOverlapWriteOneAtATime) {
  Fill("turn_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"},{"_id":"c","town":"Oslo"}])");
  const std::string base =
      "name: turn\nhandlers:\n  turn_map:\n    turn_src: {type: map, version: 1, handler: derive_fns.town}\n"
      "  turn_cnt:\n    turn_map: {type: reduce, version: 1, handler: derive_fns.per_town}\n";
  const std::string first_yml = dir_ + "/first.yml", second_yml = dir_ + "/second.yml";
  std::ofstream(first_yml) << base;
  std::ofstream(second_yml) << base
                            << "  aaa_turn_cnt:\n    turn_map: {type: reduce, version: 1, handler: derive_fns.per_town}\n";
  const std::vector<std::string> follow = {"--lease-timeout=10s", "--lease-renew=500ms", "--poll-interval=200ms"};
  auto first = ChildProcess::Start(Command(first_yml, follow), dir_, "holding the lease", kRunTimeout);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE((*first)->WaitForOutput("turn_src -> turn_map: seq 3,", kRunTimeout)) << (*first)->output();
  // Either line: it waits (now) or holds a lease of its own (before).
  auto second = ChildProcess::Start(Command(second_yml, follow), dir_, " the lease", kRunTimeout);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_THAT((*second)->output(), HasSubstr("waiting for the lease held by "));
  EXPECT_TRUE((*second)->WaitForOutput("(in turn_cnt)", kRunTimeout)) << (*second)->output();

  Write("turn_src", R"([{"_id":"d","town":"Oslo"},{"_id":"e","town":"Lima"}])");
  ASSERT_TRUE((*first)->WaitForOutput("turn_src -> turn_map: seq 5,", kRunTimeout)) << (*first)->output();
  EXPECT_THAT((*second)->output(), Not(HasSubstr("holding the lease"))) << (*second)->output();
  // Every target of the first holds its lease.
  for (const char* db : {"turn_map", "turn_cnt"}) {
    rapidjson::Document lease = Get(absl::StrCat("/", db, "/_local/cnp-derive%3Aturn%3Alease"));
    ASSERT_TRUE(lease.IsObject() && lease.HasMember("holder")) << db << ": " << couchdb::ToJson(lease);
    EXPECT_STRNE(lease["holder"].GetString(), "") << db;
  }

  // The first stops cleanly: the second takes over, at once.
  ASSERT_EQ(kill((*first)->pid(), SIGTERM), 0);
  std::optional<int> first_exit = (*first)->WaitForExitCode(kRunTimeout);
  ASSERT_TRUE(first_exit.has_value()) << (*first)->output();
  EXPECT_EQ(*first_exit, 0) << (*first)->output();
  ASSERT_TRUE((*second)->WaitForOutput("holding the lease", kRunTimeout)) << (*second)->output();
  ASSERT_EQ(kill((*second)->pid(), SIGTERM), 0);
  std::optional<int> second_exit = (*second)->WaitForExitCode(kRunTimeout);
  ASSERT_TRUE(second_exit.has_value()) << (*second)->output();
  EXPECT_EQ(*second_exit, 0) << (*second)->output();
  EXPECT_THAT((*first)->output() + (*second)->output(), Not(HasSubstr("conflict")));

  // What is left is caught up by one more run of the second declaration, and exact.
  auto rest = RunToExit(Command(second_yml, {"--once"}), ": caught up");
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(rest->exit_code, 0) << rest->output;
  for (const char* db : {"turn_cnt", "aaa_turn_cnt"}) {
    std::map<std::string, int> counts;
    for (auto& [id, doc] : Derived(db)) counts[doc["mr_key"].GetString()] = doc["mr_value"].GetInt();
    EXPECT_EQ(counts, (std::map<std::string, int>{{"Bergen", 1}, {"Lima", 1}, {"Oslo", 3}})) << db;
  }
  EXPECT_EQ(Derived("turn_map").size(), 5u);
  for (const char* db : {"turn_map", "turn_cnt", "aaa_turn_cnt"}) {
    rapidjson::Document lease = Get(absl::StrCat("/", db, "/_local/cnp-derive%3Aturn%3Alease"));
    EXPECT_TRUE(lease.IsObject() && lease.HasMember("released_by")) << db << ": " << couchdb::ToJson(lease);
  }
}

// A source database deleted and created again: its new documents are derived from the start,
// and the rows of the documents of the earlier database go (and leave the reduce). Before, the
// checkpoint (seq 3) was resumed from: the old rows stayed, still counted, and the new document
// was not derived until the new database's sequence passed 3.
TEST_F(DeriveTest, ASourceDeletedAndCreatedAgainIsDerivedAgainFromScratch) {
  Fill("again_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"},{"_id":"c","town":"Oslo"}])");
  const std::string yaml =
      "name: again\nhandlers:\n  again_map:\n    again_src: {type: map, version: 1, handler: derive_fns.town}\n"
      "  again_cnt:\n    again_map: {type: reduce, version: 1, handler: derive_fns.per_town}\n";
  auto counts = [&] {
    std::map<std::string, int> out;
    for (auto& [id, doc] : Derived("again_cnt")) out[doc["mr_key"].GetString()] = doc["mr_value"].GetInt();
    return out;
  };
  RunOnce(yaml);
  EXPECT_EQ(counts(), (std::map<std::string, int>{{"Bergen", 1}, {"Oslo", 2}}));

  couchdb::CouchClient http = Http();
  ASSERT_TRUE(http.Delete("/again_src").ok());
  ASSERT_TRUE(http.Put("/again_src", "").ok());
  Write("again_src", R"([{"_id":"z","town":"Lima"}])");
  const std::string out = RunOnce(yaml);
  EXPECT_THAT(out, HasSubstr("again_src -> again_map: again_src was deleted and created again since the checkpoint"));
  std::map<std::string, rapidjson::Document> rows = Derived("again_map");
  ASSERT_EQ(rows.size(), 1u) << out;
  EXPECT_STREQ(rows.begin()->second["mr_source_id"].GetString(), "z");
  EXPECT_EQ(counts(), (std::map<std::string, int>{{"Lima", 1}})) << out;

  // Once: the next run goes on from the new checkpoint.
  Write("again_src", R"([{"_id":"y","town":"Lima"}])");
  const std::string next = RunOnce(yaml);
  EXPECT_THAT(next, Not(HasSubstr("created again")));
  EXPECT_EQ(counts(), (std::map<std::string, int>{{"Lima", 2}})) << next;
}

// pouchdb-server keeps the continuous feed of a deleted database open, heartbeats and all: a
// follower whose source was deleted looked caught up for good, and one re-created under its
// name was never derived (a probe). The follower checks its sources (--source-check): one
// deleted ends the run, exit 1, as a feed's 404 does.
TEST_F(DeriveTest, ASourceDeletedWhileFollowedEndsTheRun) {
  Fill("vanish_src", R"([{"_id":"a","town":"Oslo"}])");
  auto run = ChildProcess::Start(
      Command(Declare(TownsDeclaration("vanish", "vanish_src", "vanish_map")), {"--heartbeat=200ms", "--source-check=300ms"}),
      dir_, "vanish_src -> vanish_map: following the changes", kRunTimeout);
  ASSERT_TRUE(run.ok()) << run.status();
  // Once its feed delivers (pouchdb-server gives a database deleted while a feed opens on it
  // a new life).
  Write("vanish_src", R"([{"_id":"b","town":"Lima"}])");
  ASSERT_TRUE((*run)->WaitForOutput("vanish_src -> vanish_map: seq 2, 2 change(s)", kRunTimeout)) << (*run)->output();
  ASSERT_TRUE(Http().Delete("/vanish_src").ok());
  const std::optional<int> exit_code = (*run)->WaitForExitCode(kRunTimeout);
  EXPECT_EQ(exit_code, 1) << (*run)->output();
  EXPECT_THAT((*run)->output(), HasSubstr("source database vanish_src no longer exists (deleted while it was followed)"));
}

// ...and one deleted and created again is derived again from scratch, as at the start of a run.
TEST_F(DeriveTest, ASourceCreatedAgainWhileFollowedIsDerivedAgainFromScratch) {
  Fill("reborn_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"}])");
  auto run = ChildProcess::Start(
      Command(Declare(TownsDeclaration("reborn", "reborn_src", "reborn_map")),
              {"--heartbeat=200ms", "--source-check=300ms"}),
      dir_, "reborn_src -> reborn_map: following the changes", kRunTimeout);
  ASSERT_TRUE(run.ok()) << run.status();
  Write("reborn_src", R"([{"_id":"c","town":"Rome"}])");
  ASSERT_TRUE((*run)->WaitForOutput("reborn_src -> reborn_map: seq 3, 3 change(s)", kRunTimeout)) << (*run)->output();
  ASSERT_EQ(Derived("reborn_map").size(), 3u);
  couchdb::CouchClient http = Http();
  ASSERT_TRUE(http.Delete("/reborn_src").ok());
  ASSERT_TRUE(http.Put("/reborn_src", "").ok());
  Write("reborn_src", R"([{"_id":"z","town":"Lima"}])");
  ASSERT_TRUE((*run)->WaitForOutput("source database reborn_src was deleted and created again while it was followed",
                                    kRunTimeout))
      << (*run)->output();
  ASSERT_TRUE((*run)->WaitForOutput("reborn_src -> reborn_map: seq 1, 1 change(s)", kRunTimeout)) << (*run)->output();
  std::map<std::string, rapidjson::Document> rows = Derived("reborn_map");
  ASSERT_EQ(rows.size(), 1u) << (*run)->output();
  EXPECT_STREQ(rows.begin()->second["mr_source_id"].GetString(), "z");
}

// A checkpoint that names no source database (an earlier release's) is judged by the sequence:
// one below the checkpoint's is a new database's.
TEST_F(DeriveTest, ASourceCreatedAgainUnderACheckpointWithoutItsMarkerIsToldByItsSequence) {
  Fill("oldck_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"},{"_id":"c","town":"Oslo"}])");
  const std::string yaml = TownsDeclaration("oldck", "oldck_src", "oldck_map");
  RunOnce(yaml);
  // The checkpoint as an earlier release wrote it: no source_id.
  const std::string path = "/oldck_map/_local/cnp-derive%3Aoldck%3Asource%3Aoldck_src";
  rapidjson::Document checkpoint = Get(path);
  ASSERT_TRUE(checkpoint.HasMember("source_id")) << couchdb::ToJson(checkpoint);
  checkpoint.RemoveMember("source_id");
  couchdb::CouchClient http = Http();
  ASSERT_TRUE(http.Put(path, couchdb::ToJson(checkpoint)).ok());
  ASSERT_TRUE(http.Delete("/oldck_src").ok());
  ASSERT_TRUE(http.Put("/oldck_src", "").ok());
  Write("oldck_src", R"([{"_id":"z","town":"Lima"}])");
  const std::string out = RunOnce(yaml);
  EXPECT_THAT(out, HasSubstr("its sequence 1 is below the checkpoint's 3"));
  std::map<std::string, rapidjson::Document> rows = Derived("oldck_map");
  ASSERT_EQ(rows.size(), 1u) << out;
  EXPECT_STREQ(rows.begin()->second["mr_source_id"].GetString(), "z");
}

// Found by a review: a CouchDB failing to read the source's marker (HTTP 5xx) was taken for a
// source without one, for the whole run, which then judged the source by its sequence alone
// (on a cluster it can read below a checkpoint of the same database: every derived row swept).
// A 5xx is the run's error; only a refusal (4xx) costs the marker.
TEST_F(DeriveTest, AMarkerCouchDbFailsToReadStopsTheRunAndWritesNothing) {
  Fill("markerfail_src", R"([{"_id":"a","town":"Oslo"}])");
  const std::string declaration = Declare(TownsDeclaration("markerfail", "markerfail_src", "markerfail_map"));
  std::string proxy_url;
  auto proxy = StartProxy({R"(fake:/markerfail_src/_local/cnp-derive-source=503:{"error":"unavailable","reason":"busy"})"},
                          proxy_url);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  std::vector<std::string> through_proxy = Command(declaration, {"--once"});
  through_proxy[through_proxy.size() - 2] = proxy_url;
  absl::StatusOr<Exited> run = RunToExit(through_proxy, "cnp derive");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1) << run->output;
  EXPECT_THAT(run->output, HasSubstr("CouchDB answered HTTP 503"));
  EXPECT_THAT(run->output, Not(HasSubstr("warning: no marker")));
  // (The target may not have been created yet: nothing in it either way.)
  if (!IsMissing("/markerfail_map")) {
    EXPECT_TRUE(Derived("markerfail_map").empty());
  }
  // CouchDB well again, the next run derives.
  EXPECT_EQ(RunToExit(Command(declaration, {"--once"}), ": caught up")->exit_code, 0);
  EXPECT_EQ(Derived("markerfail_map").size(), 1u);
}

// A source taken out of the declaration leaves its rows in the target: said at the start.
TEST_F(DeriveTest, RowsOfASourceNoLongerDeclaredAreWarnedOf) {
  Fill("gone_a", R"([{"_id":"a","town":"Oslo"}])");
  Fill("gone_b", R"([{"_id":"b","town":"Bergen"}])");
  RunOnce("name: gone\nhandlers:\n  gone_map:\n    gone_a: {type: map, version: 1, handler: derive_fns.town}\n"
          "    gone_b: {type: map, version: 1, handler: derive_fns.town}\n");
  const std::string out = RunOnce(TownsDeclaration("gone", "gone_a", "gone_map"));
  EXPECT_THAT(out, HasSubstr("gone_map: warning: it holds documents derived from gone_b, which the declaration no "
                             "longer names as a source of gone_map"));
  EXPECT_THAT(out, Not(HasSubstr("derived from gone_a")));
}

// A target may be shared by instances of several names: another's rows are noted as such, never
// given to delete (a probe: each instance told the user to delete the other's live rows).
TEST_F(DeriveTest, AnotherInstancesRowsInASharedTargetAreNotedNotGivenToDelete) {
  Fill("share_x", R"([{"_id":"a","town":"Oslo"}])");
  Fill("share_y", R"([{"_id":"b","town":"Bergen"}])");
  RunOnce(TownsDeclaration("share_one", "share_x", "share_map"));
  const std::string out = RunOnce(TownsDeclaration("share_two", "share_y", "share_map"));
  EXPECT_THAT(out, HasSubstr("share_map: note: it holds documents derived from share_x, which this declaration "
                             "(share_two) does not name as a source of share_map: another instance's, or an "
                             "earlier one's"));
  EXPECT_THAT(out, Not(HasSubstr("warning"))) << out;
  EXPECT_EQ(Derived("share_map").size(), 2u);
}

// --lease-timeout alone sets the renewal to a third of it; before, the default renewal (10s)
// made a timeout of 10s or less a usage error.
TEST_F(DeriveTest, ALeaseTimeoutGivenAloneIsAccepted) {
  Fill("short_src", R"([{"_id":"a","town":"Oslo"}])");
  auto run = RunToExit(Command(Declare(TownsDeclaration("short", "short_src", "short_map")),
                               {"--once", "--lease-timeout=5s"}),
                       "cnp derive");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 0) << run->output;
  EXPECT_THAT(run->output, HasSubstr(": caught up"));
}

// --once tells a clean run (0) from one that recorded errors of documents (3).
TEST_F(DeriveTest, OnceExitsThreeWhenItRecordedErrorsOfDocuments) {
  Fill("exit_src", R"([{"_id":"a","town":"Oslo"},{"_id":"bad1","town":"X","bad":true}])");
  const std::string declaration = Declare(TownsDeclaration("exit", "exit_src", "exit_map", "derive_fns.fragile"));
  auto run = RunToExit(Command(declaration, {"--once"}), ": caught up");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 3) << run->output;
  EXPECT_THAT(run->output, HasSubstr("caught up, but 1 document error(s) were recorded in "
                                     "_local/cnp-derive:exit:errors of exit_map (exit status 3)"));
  // The next run meets the document no more: a clean run.
  auto again = RunToExit(Command(declaration, {"--once"}), ": caught up");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->exit_code, 0) << again->output;
}

// --once stopped by SIGTERM before it caught up exits 143 (as cnp sync --once), not 0.
TEST_F(DeriveTest, OnceStoppedBySigtermBeforeItCaughtUpExits143) {
  Fill("term_src", R"([{"_id":"a","town":"Oslo","sleep":3},{"_id":"b","town":"Lima","sleep":3}])");
  const std::string declaration = Declare(TownsDeclaration("term", "term_src", "term_map", "derive_fns.slow_town"));
  auto run = ChildProcess::Start(Command(declaration, {"--once", "--batch-size=1"}), dir_, "holding the lease",
                                 kRunTimeout);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(kill((*run)->pid(), SIGTERM), 0);
  std::optional<int> exit_code = (*run)->WaitForExitCode(kRunTimeout);
  ASSERT_TRUE(exit_code.has_value()) << (*run)->output();
  EXPECT_EQ(*exit_code, 143) << (*run)->output();
  EXPECT_THAT((*run)->output(), Not(HasSubstr(": caught up")));
}

// A batch whose Map call (3s) outlasts --lease-timeout (2s): the holder keeps its lease (renewed
// from a thread of its own), writes the batch, and the other instance goes on waiting. Before,
// the lease was renewed only before writes: the other instance took it during the call, the
// holder's writes found it lost, and the two took it from each other for ever with nothing
// written (found by a review).
TEST_F(DeriveTest, AHolderBusyForLongerThanTheLeaseTimeoutKeepsTheLease) {
  // The Map call outlasts the lease's timeout; its thread renews 2.25 s after the last renewal,
  // 1.75 s before the lease would expire, a margin a loaded machine keeps.
  Fill("busy_src", R"([{"_id":"a","town":"Oslo","sleep":5},{"_id":"b","town":"Lima"}])");
  // Two workers: the second instance's Resolve call must not wait for the slow Map call.
  auto service = testing::ServerProcess::Start({"--python-path=" + testing::Runfile("tests/derive/pyfns"), "--workers=2"});
  ASSERT_TRUE(service.ok()) << service.status();
  std::string declaration = Declare(TownsDeclaration("busy", "busy_src", "busy_map", "derive_fns.slow_town"));
  std::vector<std::string> follow = {"--lease-timeout=4s", "--lease-renew=500ms", "--poll-interval=200ms"};
  auto first = ChildProcess::Start(Command(declaration, follow, service->get()), dir_, "holding the lease", kRunTimeout);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = ChildProcess::Start(Command(declaration, follow, service->get()), dir_, "waiting for the lease", kRunTimeout);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE((*first)->WaitForOutput("busy_src -> busy_map: seq 2, 2 change(s)", absl::Seconds(30)))
      << (*first)->output() << "\n--- the other instance:\n" << (*second)->output();
  EXPECT_THAT((*first)->output(), Not(HasSubstr("lost the lease")));
  EXPECT_THAT((*second)->output(), Not(HasSubstr("holding the lease")));
  EXPECT_EQ(ByKey("busy_map").size(), 2u);
  rapidjson::Document checkpoint = Get("/busy_map/_local/cnp-derive%3Abusy%3Asource%3Abusy_src");
  EXPECT_EQ(couchdb::ToJson(checkpoint["seq"]), "\"2\"");
}

// A holder whose write request is held on its way (a proxy, a stalled connection) while its
// lease expires and another instance takes over: the request is given up at the holder's
// deadline, before the lease expires, so a proxy drops it instead of applying it after the new
// holder's writes (it recreated a row the new holder had removed); and the new holder writes
// nothing until the old holder's writes are settled.
TEST_F(DeriveTest, AWriteHeldPastTheLeaseIsNotAppliedAfterATakeover) {
  Fill("fence_src", R"([{"_id":"a","town":"Oslo"}])");
  const std::string hold_bulk = absl::StrCat(dir_, "/hold_bulk"), hold_lease = absl::StrCat(dir_, "/hold_lease");
  std::string proxy_url;
  auto proxy = StartProxy({absl::StrCat(hold_bulk, "=/fence_map/_bulk_docs"),
                           absl::StrCat(hold_lease, "=/_local/cnp-derive%3Afence%3Alease")},
                          proxy_url);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  const std::string declaration = Declare(TownsDeclaration("fence", "fence_src", "fence_map"));
  const std::vector<std::string> follow = {"--lease-timeout=3s", "--lease-renew=300ms", "--poll-interval=200ms",
                                           "--feed=longpoll"};
  std::vector<std::string> through_proxy = Command(declaration, follow);
  through_proxy[through_proxy.size() - 2] = proxy_url;
  auto first = ChildProcess::Start(through_proxy, dir_, "holding the lease", kRunTimeout);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE((*first)->WaitForOutput("fence_src -> fence_map: seq 1,", kRunTimeout)) << (*first)->output();
  ASSERT_EQ(Derived("fence_map").size(), 1u);

  // Its next write is held; then its renewals are, so that its lease expires.
  std::ofstream(hold_bulk) << "";
  Write("fence_src", absl::StrCat(R"([{"_id":"a","_rev":")", Rev("fence_src", "a"), R"(","town":"Bergen"}])"));
  ASSERT_TRUE((*proxy)->WaitForOutput("held POST /fence_map/_bulk_docs", kRunTimeout)) << (*first)->output();
  std::ofstream(hold_lease) << "";
  Write("fence_src", absl::StrCat(R"([{"_id":"a","_rev":")", Rev("fence_src", "a"), R"(","_deleted":true}])"));

  auto second = ChildProcess::Start(Command(declaration, follow), dir_, "holding the lease", kRunTimeout);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE((*second)->WaitForOutput("fence_src -> fence_map: seq 3,", kRunTimeout)) << (*second)->output();
  EXPECT_THAT((*second)->output(), HasSubstr("until the earlier holder's write requests can no longer be applied"));
  EXPECT_TRUE(Derived("fence_map").empty());

  ASSERT_EQ(unlink(hold_bulk.c_str()), 0);
  ASSERT_EQ(unlink(hold_lease.c_str()), 0);
  ASSERT_TRUE((*proxy)->WaitForOutput("ended POST /fence_map/_bulk_docs", kRunTimeout)) << (*proxy)->output();
  EXPECT_THAT((*proxy)->output(), HasSubstr("dropped POST /fence_map/_bulk_docs"));
  // a is deleted: no row of it, the held one (Bergen) included.
  EXPECT_TRUE(Derived("fence_map").empty()) << (*first)->output() << (*second)->output();
}

TEST_F(DeriveTest, AHandlerTheServiceCannotLoadStopsTheRunAndWritesNothing) {
  Fill("missing_src", R"([{"_id":"a","town":"Oslo"}])");
  absl::StatusOr<Exited> run = RunToExit(
      Command(Declare(TownsDeclaration("missing", "missing_src", "missing_map",
                                       "derive_fns.no_such")),
              {"--once"}),
      "map handler derive_fns.no_such (missing_src -> missing_map)");
  ASSERT_TRUE(run.ok()) << run.status();
  // A declaration's mistake, found before anything is written: the target database (with its
  // lease and status documents) was created first, and left behind.
  EXPECT_EQ(run->exit_code, 2) << run->output;
  EXPECT_THAT(run->output, HasSubstr("; nothing was written"));
  EXPECT_THAT(run->output, Not(HasSubstr("holding the lease")));
  ASSERT_TRUE(IsMissing("/missing_map"));
}

// Found by a review with a proxy that answers for CouchDB: a 2xx answer that does not say what
// was written was taken as success, the rows lost and checkpointed past for good.
TEST_F(DeriveTest, AWriteAnswerWithoutOneResultPerDocumentFailsTheRunAndCheckpointsNothing) {
  Fill("lie_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Bergen"}])");
  std::string proxy_url;
  auto proxy = StartProxy({"fake:/lie_map/_bulk_docs=201:[]"}, proxy_url);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  std::vector<std::string> through_proxy =
      Command(Declare(TownsDeclaration("lie", "lie_src", "lie_map")), {"--once"});
  through_proxy[through_proxy.size() - 2] = proxy_url;
  absl::StatusOr<Exited> lied = RunToExit(through_proxy, "cnp derive");
  ASSERT_TRUE(lied.ok()) << lied.status();
  EXPECT_NE(lied->exit_code, 0) << lied->output;
  EXPECT_THAT(lied->output, HasSubstr("has 0 results, not one result per document: what was "
                                      "written is unknown, so nothing is checkpointed"));
  EXPECT_THAT((*proxy)->output(), HasSubstr("faked POST /lie_map/_bulk_docs"));
  // Straight to the database, the next run writes both rows.
  RunOnce(TownsDeclaration("lie", "lie_src", "lie_map"));
  EXPECT_EQ(Derived("lie_map").size(), 2u);
}

// Found by a review: CouchDB 3 refuses a whole _bulk_docs request with HTTP 413 when one of its
// documents passes max_document_size (8 MB by default): the run ended, and every run after it
// sent the same batch. The request is made again in halves, and the document refused alone is
// its source document's error (document_too_large); the others are written.
TEST_F(DeriveTest, ADerivedDocumentCouchDbRefusesAsTooLargeIsItsSourcesErrorAndTheOthersAreWritten) {
  Fill("toolarge_src", absl::StrCat(R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Wide","pad":")",
                                    std::string(5000, 'x'), R"("},{"_id":"c","town":"Bergen"},{"_id":"d","town":"Lima"}])"));
  std::string proxy_url;
  auto proxy = StartProxy({"maxdoc:2000"}, proxy_url);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  std::vector<std::string> through_proxy =
      Command(Declare(TownsDeclaration("toolarge", "toolarge_src", "toolarge_map", "derive_fns.town_pad")), {"--once"});
  through_proxy[through_proxy.size() - 2] = proxy_url;
  absl::StatusOr<Exited> run = RunToExit(through_proxy, "cnp derive");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 3) << run->output;  // caught up, with document errors recorded
  EXPECT_THAT((*proxy)->output(), HasSubstr("refused POST /toolarge_map/_bulk_docs"));
  EXPECT_THAT(run->output, HasSubstr(" derived from b was not stored: document_too_large: toolarge_map refused the derived document "));
  EXPECT_THAT(run->output, HasSubstr(": writing derived documents to toolarge_map at "));
  EXPECT_THAT(run->output, HasSubstr("refused as too large, HTTP 413"));
  std::multimap<std::string, std::string> rows = ByKey("toolarge_map");
  EXPECT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows.count("\"Wide\""), 0u);
  rapidjson::Document errors = Errors("toolarge_map", "toolarge");
  ASSERT_TRUE(errors.HasMember("errors")) << couchdb::ToJson(errors);
  ASSERT_EQ(errors["errors"].Size(), 1u);
  EXPECT_EQ(std::string(errors["errors"][0]["type"].GetString()), "document_too_large");
}

// Likewise a change that is not a deletion but comes without its document: read as a deletion,
// its rows were removed until the document next changed.
TEST_F(DeriveTest, AChangeWithoutItsDocumentFailsTheRunAndRemovesNothing) {
  Fill("nodoc_src", R"([{"_id":"a","town":"Oslo"}])");
  const std::string declaration = TownsDeclaration("nodoc", "nodoc_src", "nodoc_map");
  RunOnce(declaration);
  ASSERT_EQ(Derived("nodoc_map").size(), 1u);
  Write("nodoc_src", absl::StrCat(R"([{"_id":"a","_rev":")", Rev("nodoc_src", "a"), R"(","town":"Bergen"}])"));
  std::string proxy_url;
  auto proxy = StartProxy({"nodoc:/nodoc_src/_changes"}, proxy_url);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  std::vector<std::string> through_proxy = Command(Declare(declaration), {"--once"});
  through_proxy[through_proxy.size() - 2] = proxy_url;
  absl::StatusOr<Exited> lied = RunToExit(through_proxy, "cnp derive");
  ASSERT_TRUE(lied.ok()) << lied.status();
  EXPECT_NE(lied->exit_code, 0) << lied->output;
  EXPECT_THAT(lied->output, HasSubstr("has no document, though it is not a deletion"));
  EXPECT_EQ(Derived("nodoc_map").size(), 1u) << "a's row was removed";
  RunOnce(declaration);
  std::map<std::string, rapidjson::Document> rows = Derived("nodoc_map");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(std::string(rows.begin()->second["mr_key"].GetString()), "Bergen");
}

// Every document would have failed with the worker's TypeError, each one recorded as an error.
TEST_F(DeriveTest, AnAsyncHandlerStopsTheRunAndWritesNothing) {
  Fill("async_src", R"([{"_id":"a","town":"Oslo"}])");
  absl::StatusOr<Exited> run = RunToExit(
      Command(Declare(TownsDeclaration("async", "async_src", "async_map",
                                       "derive_fns.async_towns")),
              {"--once"}),
      "map handler derive_fns.async_towns (async_src -> async_map)");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2) << run->output;
  EXPECT_THAT(run->output, HasSubstr("it returns a coroutine without running its body"));
  EXPECT_THAT(run->output, HasSubstr("; nothing was written"));
  ASSERT_TRUE(IsMissing("/async_map"));
}

// A reduce named as a map handler: every document would fail with a TypeError (three
// parameters without a default, one document passed).
TEST_F(DeriveTest, AHandlerThatCannotTakeItsArgumentsStopsTheRunAndWritesNothing) {
  Fill("unfit_src", R"([{"_id":"a","town":"Oslo"}])");
  absl::StatusOr<Exited> run = RunToExit(
      Command(Declare(TownsDeclaration("unfit", "unfit_src", "unfit_map", "derive_fns.total")), {"--once"}),
      "map handler derive_fns.total (unfit_src -> unfit_map)");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2) << run->output;
  EXPECT_THAT(run->output, HasSubstr("as a map function it is given 1 argument (the document), but it requires 2"));
  EXPECT_THAT(run->output, HasSubstr("; nothing was written"));
  ASSERT_TRUE(IsMissing("/unfit_map"));
}

TEST_F(DeriveTest, AMissingSourceDatabaseStopsTheRunBeforeAnythingIsWritten) {
  absl::StatusOr<Exited> run = RunToExit(
      Command(Declare(TownsDeclaration("nosrc", "no_such_src", "nosrc_map")), {"--once"}),
      "cnp derive");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1) << run->output;
  EXPECT_THAT(run->output, HasSubstr("source database no_such_src does not exist at "));
  ASSERT_TRUE(IsMissing("/nosrc_map"));
}

// The same source twice under one target ran both stages, wrote rows, then failed on their
// shared checkpoint (exit 1); now the declaration is refused before anything is written (found
// by a review).
TEST_F(DeriveTest, ARepeatedKeyInTheDeclarationIsRefusedBeforeAnythingIsWritten) {
  Fill("twice_src", R"([{"_id":"a","town":"Oslo"}])");
  std::string declaration = Declare(
      "name: twice\n"
      "handlers:\n"
      "  twice_map:\n"
      "    twice_src: {type: map, version: 1, handler: derive_fns.town}\n"
      "    twice_src: {type: map, version: 2, handler: derive_fns.town_upper}\n");
  absl::StatusOr<Exited> run = RunToExit(Command(declaration, {"--once"}), "cnp derive");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2) << run->output;
  EXPECT_THAT(run->output,
              HasSubstr("derive.yml:5: \"twice_src\" is given twice in handlers.twice_map"));
  ASSERT_TRUE(IsMissing("/twice_map"));
}

// A name that is not UTF-8 created the target database, then the lease could not be read
// (pouchdb-server answered HTTP 400 for its id) and the run exited 1; a handler's
// name that is not UTF-8 failed the check before writing as if cnp-server did not answer, and
// the run took the lease before its Map call failed. Both are refused before anything is
// written (found by a review).
TEST_F(DeriveTest, ANameOrHandlerThatIsNotUtf8IsRefusedBeforeAnythingIsWritten) {
  Fill("utf8_src", R"([{"_id":"a","town":"Oslo"}])");
  for (const auto& [declaration, message] :
       std::vector<std::pair<std::string, std::string>>{
           {TownsDeclaration("caf\xff", "utf8_src", "utf8_map"), "derive.yml:1: name is not valid UTF-8"},
           {TownsDeclaration("utf8", "utf8_src", "utf8_map", "derive_fns.tow\xffn"),
            "derive.yml:4: handlers.utf8_map.utf8_src.handler is not valid UTF-8"}}) {
    absl::StatusOr<Exited> run = RunToExit(Command(Declare(declaration), {"--once"}), "cnp derive");
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->exit_code, 2) << run->output;
    EXPECT_THAT(run->output, HasSubstr(message));
    ASSERT_TRUE(IsMissing("/utf8_map"));
  }
}

TEST_F(DeriveTest, AnInstanceThatStopsCleanlyHandsTheLeaseOverAtOnce) {
  Fill("handover_src", R"([{"_id":"a","town":"Oslo"}])");
  std::string declaration = Declare(TownsDeclaration("handover", "handover_src", "handover_map"));
  std::vector<std::string> follow = {"--lease-timeout=60s", "--lease-renew=500ms", "--poll-interval=500ms"};
  auto first = ChildProcess::Start(Command(declaration, follow), dir_, "holding the lease", kRunTimeout);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = ChildProcess::Start(Command(declaration, follow), dir_, "waiting for the lease", kRunTimeout);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(kill((*first)->pid(), SIGTERM), 0);
  ASSERT_TRUE((*first)->WaitForOutput("handover: stopped", kRunTimeout)) << (*first)->output();
  // Well before the 60s timeout: the lease was released, not left to expire.
  EXPECT_TRUE((*second)->WaitForOutput("holding the lease", absl::Seconds(30))) << (*second)->output();
}

// The operator's mistake: a database's URL where CouchDB's root belongs. Nothing is written in
// that database (which would have created a document for each target "database" and then
// fought over a lease CouchDB could not store), and the message says what to pass.
TEST_F(DeriveTest, ADatabasesUrlIsRefusedBeforeAnythingIsWritten) {
  Fill("dburl_src", R"([{"_id":"a","town":"Oslo"},{"_id":"b","town":"Lima"}])");
  std::vector<std::string> argv = Command(Declare(TownsDeclaration("dburl", "dburl_src", "dburl_map")), {"--once"});
  argv[argv.size() - 2] = couch_->url() + "/dburl_src";
  absl::StatusOr<Exited> run = RunToExit(argv, "cnp derive");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2) << run->output;
  EXPECT_THAT(run->output,
              HasSubstr(absl::StrCat(couch_->url(), "/dburl_src is the URL of the database "
                                     "dburl_src, not CouchDB's root; pass CouchDB's root URL "
                                     "(here probably ", couch_->url(), ")")));
  EXPECT_EQ(Get("/dburl_src")["doc_count"].GetInt(), 2);
  ASSERT_TRUE(IsMissing("/dburl_src/dburl_map"));
  ASSERT_TRUE(IsMissing("/dburl_map"));
}

// A cron job's `--once` while a follower holds the lease: the follower does the work, so it
// says who holds it and exits 0 at once instead of waiting for a lease that is always renewed.
TEST_F(DeriveTest, OnceExitsAtOnceSayingWhoHoldsTheLease) {
  Fill("held_src", R"([{"_id":"a","town":"Oslo"}])");
  std::string declaration = Declare(TownsDeclaration("held", "held_src", "held_map"));
  absl::StatusOr<Holder> follower = StartHolder(declaration, "30s");
  ASSERT_TRUE(follower.ok()) << follower.status();
  const std::string& holder = follower->id;

  absl::StatusOr<Exited> once = RunToExit(Command(declaration, {"--once"}), "cnp derive");
  ASSERT_TRUE(once.ok()) << once.status();
  EXPECT_EQ(once->exit_code, 0) << once->output;
  EXPECT_THAT(once->output,
              HasSubstr(absl::StrCat("held: the lease is held by ", holder, " (in held_map, for another ")));
  EXPECT_THAT(once->output, HasSubstr("which does the work; exiting (--once)"));
  EXPECT_THAT(once->output, Not(HasSubstr("caught up")));
  EXPECT_THAT(once->output, Not(HasSubstr("holding the lease")));
}

// Found by a probe: a follower killed (SIGKILL) left its lease to expire, and until it did, a
// cron job's `--once` said the dead holder did the work and exited 0, every run, while nothing
// did. A holder of this host that has ended is waited out, and the run does the work.
TEST_F(DeriveTest, OnceTakesOverTheLeaseOfAHolderOfThisHostThatHasEnded) {
  Fill("dead_src", R"([{"_id":"a","town":"Oslo"}])");
  std::string declaration = Declare(TownsDeclaration("dead", "dead_src", "dead_map"));
  absl::StatusOr<Holder> follower = StartHolder(declaration, "3s");
  ASSERT_TRUE(follower.ok()) << follower.status();
  const std::string& holder = follower->id;
  ASSERT_EQ(kill(follower->process->pid(), SIGKILL), 0);
  follower->process->WaitForExitCode(kRunTimeout);
  Fill("dead_src", R"([{"_id":"b","town":"Lima"}])");

  absl::StatusOr<Exited> once = RunToExit(Command(declaration, {"--once", "--lease-timeout=3s"}), "cnp derive");
  ASSERT_TRUE(once.ok()) << once.status();
  EXPECT_EQ(once->exit_code, 0) << once->output;
  EXPECT_THAT(once->output, HasSubstr(absl::StrCat("dead: the lease is held by ", holder,
                                                   " (in dead_map), a process of this host that has ended; "
                                                   "taking the lease over once it expires, in ")));
  EXPECT_THAT(once->output, HasSubstr("holding the lease as "));
  EXPECT_THAT(once->output, Not(HasSubstr("which does the work")));
  std::multimap<std::string, std::string> sources;
  for (auto& [id, doc] : Derived("dead_map")) sources.emplace(doc["mr_key"].GetString(), doc["mr_source_id"].GetString());
  EXPECT_THAT(sources, ::testing::UnorderedElementsAre(::testing::Pair("Oslo", "a"), ::testing::Pair("Lima", "b")));
}

// `systemctl restart cnp-server` under a follower: the Map call finds no server, the follower
// says so and tries again (from the checkpoint) until one answers on the same socket, and the
// changes made meanwhile are all derived, none recorded as failed.
TEST_F(DeriveTest, AFollowerWaitsOutACnpServerRestartAndMissesNothing) {
  Fill("restart_src", R"([{"_id":"a","town":"Oslo"}])");
  const std::string target = absl::StrCat("unix:", testing::ShortTempDir(), "/cnp.sock");
  auto start_service = [&] {
    return testing::ServerProcess::Launch(
        {.args = {"--listen=" + target, "--python-path=" + testing::Runfile("tests/derive/pyfns"), "--workers=1"},
         .fresh_socket = false});
  };
  std::unique_ptr<testing::ServerProcess> service = start_service();
  ASSERT_TRUE(service->ready()) << service->Log();
  auto follower = ChildProcess::Start(
      {testing::Runfile("client/cli/cnp"), "derive", "--target=" + target, "--poll-interval=200ms",
       couch_->url(), Declare(TownsDeclaration("restart", "restart_src", "restart_map"))},
      dir_, "seq 1, 1 change(s)", kRunTimeout);
  ASSERT_TRUE(follower.ok()) << follower.status();

  service->Signal(SIGTERM);
  service->WaitForExit();
  Write("restart_src", R"([{"_id":"b","town":"Bergen"},{"_id":"c","town":"Lima"}])");
  ASSERT_TRUE((*follower)->WaitForOutput("trying again from the checkpoints in", kRunTimeout)) << (*follower)->output();
  EXPECT_THAT((*follower)->output(), HasSubstr("map handler derive_fns.town (restart_src -> restart_map): "));

  service = start_service();
  ASSERT_TRUE(service->ready()) << service->Log();
  ASSERT_TRUE((*follower)->WaitForOutput("cnp-server answers again", kRunTimeout)) << (*follower)->output();
  ASSERT_TRUE((*follower)->WaitForOutput("seq 3, 2 change(s)", kRunTimeout)) << (*follower)->output();
  std::multimap<std::string, std::string> derived = ByKey("restart_map");
  EXPECT_EQ(derived.size(), 3u);
  EXPECT_EQ(derived.count("\"Bergen\""), 1u);
  EXPECT_EQ(derived.count("\"Lima\""), 1u);
  ASSERT_TRUE(IsMissing("/restart_map/_local/cnp-derive%3Arestart%3Aerrors"));
  EXPECT_FALSE((*follower)->WaitForExitCode(absl::ZeroDuration()).has_value()) << (*follower)->output();
}

// A CouchDB restart (HTTP 503 for a while, then connections closed unanswered) is waited out
// as a cnp-server restart is, the lease kept, however long it takes: before, the first renewal
// of the lease that failed ended the follower with exit status 1.
TEST_F(DeriveTest, AFollowerWaitsOutACouchDbRestartAndMissesNothing) {
  Fill("couchdown_src", R"([{"_id":"a","town":"Oslo"}])");
  const std::string down = absl::StrCat(dir_, "/down");
  std::string proxy_url;
  auto proxy = StartProxy({"down:" + down}, proxy_url);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  // Renewed often, so that the outage meets a renewal; it lasts past the lease's timeout.
  std::vector<std::string> argv =
      Command(Declare(TownsDeclaration("couchdown", "couchdown_src", "couchdown_map")),
              {"--feed=longpoll", "--poll-interval=200ms", "--lease-timeout=3s", "--lease-renew=300ms"});
  argv[argv.size() - 2] = proxy_url;
  auto follower = ChildProcess::Start(argv, dir_, "seq 1, 1 change(s)", kRunTimeout);
  ASSERT_TRUE(follower.ok()) << follower.status();

  std::ofstream(down) << "503";
  Write("couchdown_src", R"([{"_id":"b","town":"Bergen"}])");
  ASSERT_TRUE((*follower)->WaitForOutput("(nothing is skipped)", kRunTimeout)) << (*follower)->output();
  EXPECT_THAT((*follower)->output(), HasSubstr("CouchDB answered HTTP 503"));
  std::ofstream(down) << "drop";
  ASSERT_TRUE((*follower)->WaitForOutput("cannot reach CouchDB", kRunTimeout)) << (*follower)->output();

  ASSERT_EQ(std::remove(down.c_str()), 0);
  ASSERT_TRUE((*follower)->WaitForOutput("CouchDB answers again", kRunTimeout)) << (*follower)->output();
  ASSERT_TRUE((*follower)->WaitForOutput("seq 2, 1 change(s)", kRunTimeout)) << (*follower)->output();
  std::multimap<std::string, std::string> derived = ByKey("couchdown_map");
  EXPECT_EQ(derived.size(), 2u);
  EXPECT_EQ(derived.count("\"Bergen\""), 1u);
  ASSERT_TRUE(IsMissing("/couchdown_map/_local/cnp-derive%3Acouchdown%3Aerrors"));
  EXPECT_FALSE((*follower)->WaitForExitCode(absl::ZeroDuration()).has_value()) << (*follower)->output();
}

// The other UNAVAILABLE: a worker that dies on a document is answered by a cnp-server that is
// there. Trying again would kill a worker each time; the run ends as before.
TEST_F(DeriveTest, AWorkerDyingOnADocumentEndsTheRunRatherThanBeingWaitedOut) {
  Fill("crash_src", R"([{"_id":"a","town":"Oslo","crash":true}])");
  auto service = testing::ServerProcess::Start({"--python-path=" + testing::Runfile("tests/derive/pyfns"), "--workers=1"});
  ASSERT_TRUE(service.ok()) << service.status();
  absl::StatusOr<Exited> run = RunToExit(
      Command(Declare(TownsDeclaration("crash", "crash_src", "crash_map", "derive_fns.crash")),
              {"--once"}, service->get()),
      "holding the lease");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 1) << run->output;
  EXPECT_THAT(run->output, HasSubstr("map handler derive_fns.crash (crash_src -> crash_map): "));
  EXPECT_THAT(run->output, Not(HasSubstr("trying again")));
}

// The first SIGTERM stops the run once the work in hand is written: the batch whose Map call
// is running when it comes is written and checkpointed, not thrown away (before, every write
// after the signal was refused as if the lease were lost).
TEST_F(DeriveTest, AStopSignalWritesTheBatchInHandFirst) {
  int map_started = -1;
  const std::string fifo = MapStartedFifo(map_started);
  ASSERT_GE(map_started, 0);
  // Long enough that the signal surely comes while the call runs.
  Fill("inhand_src", absl::StrCat(R"([{"_id":"a","town":"Oslo","sleep":3,"fifo":")", fifo, R"("}])"));
  const std::string declaration =
      Declare(TownsDeclaration("inhand", "inhand_src", "inhand_map", "derive_fns.announced_slow_town"));
  auto run = ChildProcess::Start(Command(declaration, {}), dir_, "holding the lease", kRunTimeout);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE(AwaitMapStarted(map_started)) << (*run)->output();

  ASSERT_EQ(kill((*run)->pid(), SIGTERM), 0);
  std::optional<int> exit_code = (*run)->WaitForExitCode(kRunTimeout);
  ASSERT_TRUE(exit_code.has_value()) << (*run)->output();
  EXPECT_EQ(*exit_code, 0) << (*run)->output();
  EXPECT_THAT((*run)->output(), HasSubstr("inhand_src -> inhand_map: seq 1, 1 change(s)"));
  EXPECT_THAT((*run)->output(), HasSubstr("inhand: stopped"));
  std::multimap<std::string, std::string> derived = ByKey("inhand_map");
  ASSERT_EQ(derived.size(), 1u);
  EXPECT_EQ(derived.count("\"Oslo\""), 1u);
  // Checkpointed too: the next run has nothing to do.
  absl::StatusOr<Exited> again = RunToExit(Command(declaration, {"--once"}), "cnp derive");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->exit_code, 0) << again->output;
  EXPECT_THAT(again->output, Not(HasSubstr("change(s)")));
}

// An operator whose CouchDB or cnp-server hangs need not wait: the first SIGTERM asks for a
// clean stop, which waits for the Map call in hand (here 60 s), and a second ends the run at
// once, by that signal.
TEST_F(DeriveTest, ASecondStopSignalEndsTheRunAtOnce) {
  int map_started = -1;
  const std::string fifo = MapStartedFifo(map_started);
  ASSERT_GE(map_started, 0);
  Fill("impatient_src", absl::StrCat(R"([{"_id":"a","town":"Oslo","sleep":60,"fifo":")", fifo, R"("}])"));
  auto service = testing::ServerProcess::Start({"--python-path=" + testing::Runfile("tests/derive/pyfns"), "--workers=1"});
  ASSERT_TRUE(service.ok()) << service.status();
  auto run = ChildProcess::Start(
      Command(Declare(TownsDeclaration("impatient", "impatient_src", "impatient_map", "derive_fns.announced_slow_town")),
              {}, service->get()),
      dir_, "holding the lease", kRunTimeout);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE(AwaitMapStarted(map_started)) << (*run)->output();

  ASSERT_EQ(kill((*run)->pid(), SIGTERM), 0);
  ASSERT_TRUE((*run)->WaitForOutput("signal again to stop at once", kRunTimeout)) << (*run)->output();
  ASSERT_EQ(kill((*run)->pid(), SIGTERM), 0);
  std::optional<int> exit_code = (*run)->WaitForExitCode(absl::Seconds(30));
  ASSERT_TRUE(exit_code.has_value()) << "still running, in its 60 s Map call:\n" << (*run)->output();
  EXPECT_EQ(*exit_code, 128 + SIGTERM) << "not ended by the signal:\n" << (*run)->output();
  EXPECT_THAT((*run)->output(), Not(HasSubstr(": stopped")));
  EXPECT_TRUE(Derived("impatient_map").empty());
}

}  // namespace
}  // namespace cnp::derive
