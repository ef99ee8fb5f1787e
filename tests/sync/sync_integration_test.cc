// cnp upload --register and cnp sync against pouchdb-server (a real CouchDB API on loopback):
// registration stores resolved design documents per target rule; a sync pass puts them in
// every existing matching database (names, globs, classifications) with upload's diff and
// keep-unknown-fields rules; a database created later gets them on the next pass (--once, as
// from cron). pouchdb-server has no _db_updates: following is in follow_test.cc.
//
// No admin is configured: pouchdb-server cannot create databases once one exists.
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/sync/registry_removal.h"
#include "client/sync/registry_sync.h"
#include "client/sync/sync_command.h"
#include "client/upload/upload_command.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/couchdb/couch_client.h"
#include "common/couchdb/json.h"
#include "service/upload/uploader.h"
#include "tests/support/pouchdb_server.h"
#include "tests/support/fake_blocking_task_runner.h"
#include "tests/upload/upload_events.h"

namespace cnp::upload::testing {

using ::cnp::testing::PouchDbServer;

namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

// Kazoo's account databases are "account/..", their MODBs "account/..-YYYYMM"; pouchdb-server
// drops '/' from database names, so here they are "account-..".
constexpr char kYaml[] =
    "classifications:\n"
    "  account: \"account-*\"\n"
    "  modb: \"account-*-??????\"\n"
    "towns:\n"
    "  classification: account\n"
    "  views:\n"
    "    by_town: myviews.townmap\n"
    "billing:\n"
    "  classification: modb\n"
    "  views:\n"
    "    by_month: {map: myviews.townmap, reduce: _count}\n"
    "config:\n"
    "  databases: system_config\n"
    "  validate_doc_update: myviews.validate\n";

class SyncIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<PouchDbServer>> started = PouchDbServer::Start();
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = started->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    runner_.Define("myviews.townmap", 123);
    runner_.Define("myviews.validate", 21);
    couch_ = std::make_unique<couchdb::CouchClient>(couchdb::CouchClient::Options{.base_url = server_->url()});
  }

  // Each test has databases of its own: "<prefix>..." names and a registry.
  void CreateDatabase(const std::string& name) {
    absl::StatusOr<couchdb::HttpResponse> created = couch_->Put(couchdb::DatabasePath(name), "");
    ASSERT_TRUE(created.ok() && created->status == 201) << name;
  }

  // Registers _design/towns for `pattern` in `registry`, syncs it into `database`, then adds a
  // conflicting revision of it (map myviews.townmap|7), as a replication would.
  void SyncThenReplicateAConflict(const std::string& registry, const std::string& pattern,
                                  const std::string& database) {
    for (const std::string& db : {registry, database}) CreateDatabase(db);
    ASSERT_TRUE(Register(registry, TownsFor(pattern)).status.ok());
    ASSERT_TRUE(SyncOnce(registry).status.ok());
    const std::string path = absl::StrCat("/", database, "/_design/towns");
    rapidjson::Document other = Read(path);
    other["_rev"].SetString("1-00000000000000000000000000000000", other.GetAllocator());
    other["views"]["by_town"]["map"].SetString("myviews.townmap|7", other.GetAllocator());
    absl::StatusOr<couchdb::HttpResponse> replicated =
        couch_->Post(absl::StrCat("/", database, "/_bulk_docs"),
                     absl::StrCat(R"({"new_edits":false,"docs":[)", couchdb::ToJson(other), "]}"));
    ASSERT_TRUE(replicated.ok() && replicated->status == 201);
  }

  UploadResult Register(const std::string& registry, const std::string& yaml) {
    v1::UploadRequest request;
    request.set_couchdb_url(server_->url());
    request.set_register_database(registry);
    *request.add_files() = File("kazoo.yml", yaml);
    Uploader uploader(runner_);
    return RunUpload(uploader, request);
  }

  // The stored document, or an empty object when there is none.
  rapidjson::Document Read(const std::string& path) {
    absl::StatusOr<couchdb::HttpResponse> got = couch_->Get(path);
    rapidjson::Document doc(rapidjson::kObjectType);
    if (got.ok() && got->status == 200) {
      absl::StatusOr<rapidjson::Document> parsed = couchdb::ParseJson(got->body);
      if (parsed.ok()) doc = std::move(*parsed);
    }
    return doc;
  }

  // A registry holding towns, a view for each database of the classification `pattern`.
  static std::string TownsFor(const std::string& pattern) {
    return absl::StrCat("classifications: {account: \"", pattern, "\"}\n"
                        "towns:\n"
                        "  classification: account\n"
                        "  views: {by_town: myviews.townmap}\n");
  }
  // `cnp upload --register=REGISTRY --remove URL NAME`, which must succeed.
  void RemoveEntry(const std::string& registry, const std::string& name) {
    auto no_env = [](const char*) -> std::optional<std::string> { return std::nullopt; };
    std::ostringstream out, err;
    EXPECT_EQ(client::upload::RunUpload(
                  {"cnp upload", "--register=" + registry, "--remove", server_->url(), name},
                  {.out = out, .err = err, .env = no_env}),
              0)
        << out.str() << err.str();
  }

  // Runs one sync pass and returns what it reported.
  UploadResult SyncOnce(const std::string& registry,
                        client::sync::RegistrySync::Options options = {}) {
    UploadResult result;
    client::sync::RegistrySync sync(*couch_, registry, options,
                                    [&](const v1::UploadEvent& e) { result.events.push_back(e); });
    result.status = sync.SyncAll();
    return result;
  }

  static PouchDbServer* server_;
  ::cnp::testing::FakeBlockingTaskRunner runner_;
  std::unique_ptr<couchdb::CouchClient> couch_;
};

PouchDbServer* SyncIntegrationTest::server_ = nullptr;

TEST_F(SyncIntegrationTest, RegisterStoresResolvedDesignDocumentsPerTargetRule) {
  CreateDatabase("reg1");
  CreateDatabase("account-r1");
  UploadResult result = Register("reg1", kYaml);
  ASSERT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
  std::vector<std::string> created;
  for (const auto& o : result.outcomes()) {
    EXPECT_EQ(o.database(), "reg1");
    if (o.action() == v1::DesignDocOutcome::CREATED) created.push_back(o.id());
  }
  EXPECT_THAT(created, UnorderedElementsAre("towns@classification:account",
                                            "billing@classification:modb",
                                            "config@database:system_config"));

  rapidjson::Document towns = Read("/reg1/towns%40classification%3Aaccount");
  ASSERT_TRUE(towns.HasMember("design_document")) << couchdb::ToJson(towns);
  EXPECT_EQ(std::string(towns["type"].GetString()), "cnp_design_document");
  EXPECT_EQ(couchdb::ToJson(towns["target"]), R"({"classification":"account","databases":["account-*"]})");
  EXPECT_EQ(std::string(towns["design_document"]["views"]["by_town"]["map"].GetString()),
            "myviews.townmap|123");
  // Registering writes nothing in place.
  EXPECT_FALSE(Read("/account-r1/_design/towns").HasMember("_id"));

  // Registering the same again changes nothing; a new version is an update with its diff.
  result = Register("reg1", kYaml);
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  for (const auto& o : result.outcomes()) EXPECT_EQ(o.action(), v1::DesignDocOutcome::UNCHANGED);
  runner_.Define("myviews.townmap", 124);
  result = Register("reg1", kYaml);
  v1::DesignDocOutcome updated = result.Outcome("towns@classification:account", "reg1");
  EXPECT_EQ(updated.action(), v1::DesignDocOutcome::UPDATED) << result.Dump();
  ASSERT_THAT(updated.changes(), SizeIs(1));
  EXPECT_EQ(updated.changes(0).path(), "design_document.views.by_town.map");
}

TEST_F(SyncIntegrationTest, RegisteringNeedsTargetsAndKnownClassifications) {
  CreateDatabase("reg2");
  UploadResult result = Register("reg2",
                                 "loose:\n"
                                 "  views: {v: myviews.townmap}\n"
                                 "typo:\n"
                                 "  classification: acount\n"
                                 "  views: {v: myviews.townmap}\n");
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  std::vector<std::string> errors;
  for (const auto& p : result.errors()) {
    errors.push_back(absl::StrCat(p.location().file(), ":", p.location().line(), ": ",
                                  p.message()));
  }
  EXPECT_THAT(errors, ElementsAre(HasSubstr("kazoo.yml:1: design document \"loose\" names no "
                                            "databases: or classification:"),
                                  HasSubstr("kazoo.yml:4: classification \"acount\" is not "
                                            "defined")));
  rapidjson::Document all = Read("/reg2/_all_docs");
  ASSERT_TRUE(all.HasMember("rows")) << couchdb::ToJson(all);
  EXPECT_EQ(all["rows"].Size(), 0u) << couchdb::ToJson(all);
}

TEST_F(SyncIntegrationTest, SyncPutsThemInEveryMatchingDatabaseThenInANewOne) {
  for (const char* db : {"reg3", "account-s1", "account-s1-202611", "account-s2", "other3"}) {
    CreateDatabase(db);
  }
  ASSERT_TRUE(Register("reg3", kYaml).status.ok());
  // A field CouchDB has that the registry does not mention is kept, as by cnp upload.
  absl::StatusOr<couchdb::HttpResponse> legacy = couch_->Put(
      "/account-s2/_design/towns",
      R"({"language": "python", "views": {"legacy": {"map": "old.map|1"}}})");
  ASSERT_TRUE(legacy.ok() && legacy->status == 201);

  UploadResult result = SyncOnce("reg3");
  ASSERT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
  EXPECT_EQ(result.Outcome("_design/towns", "account-s1").action(), v1::DesignDocOutcome::CREATED)
      << result.Dump();
  EXPECT_EQ(result.Outcome("_design/towns", "account-s1-202611").action(),
            v1::DesignDocOutcome::CREATED);
  EXPECT_EQ(result.Outcome("_design/billing", "account-s1-202611").action(),
            v1::DesignDocOutcome::CREATED);
  v1::DesignDocOutcome kept = result.Outcome("_design/towns", "account-s2");
  EXPECT_EQ(kept.action(), v1::DesignDocOutcome::UPDATED);
  EXPECT_THAT(kept.kept_fields(), ElementsAre("views.legacy"));
  EXPECT_EQ(result.Outcome("_design/billing", "account-s2").id(), "");  // not a MODB
  EXPECT_EQ(result.Outcome("_design/towns", "other3").id(), "");
  // "system_config" does not exist here: nothing is created for it.
  EXPECT_THAT(result.errors(), IsEmpty()) << result.Dump();

  rapidjson::Document towns = Read("/account-s1/_design/towns");
  ASSERT_TRUE(towns.HasMember("views")) << couchdb::ToJson(towns);
  EXPECT_EQ(std::string(towns["views"]["by_town"]["map"].GetString()), "myviews.townmap|123");
  EXPECT_TRUE(Read("/account-s2/_design/towns")["views"].HasMember("legacy"));
  EXPECT_FALSE(Read("/reg3/_design/towns").HasMember("_id"));

  // A database created later gets its design documents on the next pass; the others are
  // left alone.
  CreateDatabase("account-s3");
  result = SyncOnce("reg3");
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  EXPECT_EQ(result.Outcome("_design/towns", "account-s3").action(), v1::DesignDocOutcome::CREATED);
  EXPECT_EQ(result.Outcome("_design/towns", "account-s1").action(),
            v1::DesignDocOutcome::UNCHANGED);
  EXPECT_EQ(std::string(Read("/account-s3/_design/towns")["views"]["by_town"]["map"].GetString()),
            "myviews.townmap|123");
}

// Whoever may write the registry must not get code into every database through cnp sync: an
// entry in CouchDB's own languages, or with a function that is code rather than a name, is
// skipped with a warning; a well-formed entry next to them is still synced.
TEST_F(SyncIntegrationTest, EntriesHoldingCodeRatherThanNamesAreSkipped) {
  for (const char* db : {"reg9", "account-x1"}) CreateDatabase(db);
  ASSERT_TRUE(Register("reg9",
                       "towns:\n"
                       "  databases: account-x1\n"
                       "  views: {by_town: myviews.townmap}\n")
                  .status.ok());
  auto plant = [&](const std::string& name, const std::string& design) {
    absl::StatusOr<couchdb::HttpResponse> put = couch_->Put(
        absl::StrCat("/reg9/", name, "@database:account-x1"),
        absl::StrCat(R"({"type":"cnp_design_document","name":")", name,
                     R"(","target":{"databases":["account-x1"]},"design_document":)", design,
                     "}"));
    ASSERT_TRUE(put.ok() && put->status == 201) << name;
  };
  plant("js", R"({"_id":"_design/js","views":{"v":{"map":"function(doc){emit(doc._id,1)}"}}})");
  plant("erl", R"({"_id":"_design/erl","language":"erlang","views":{"v":{"map":"fun(D)->ok end."}}})");
  plant("vdu", R"({"_id":"_design/vdu","language":"python",)"
               R"x("validate_doc_update":"lambda n, o, u: __import__('os').system('id')"})x");
  plant("lib", R"({"_id":"_design/lib","language":"python","views":{"lib":{"x":"code"}}})");
  plant("cnt", R"({"_id":"_design/cnt","language":"python",)"
               R"("views":{"v":{"map":"myviews.townmap|1","reduce":"_cnt"}}})");
  plant("top", R"({"_id":"_design/top","language":"python",)"
               R"("views":{"v":{"map":"myviews.townmap|1","reduce":"_top_3"}}})");

  UploadResult result = SyncOnce("reg9");
  EXPECT_EQ(result.Outcome("_design/towns", "account-x1").action(), v1::DesignDocOutcome::CREATED)
      << result.Dump();
  for (const char* name : {"js", "erl", "vdu", "lib", "cnt", "top"}) {
    EXPECT_FALSE(Read(absl::StrCat("/account-x1/_design/", name)).HasMember("_id")) << name;
  }
  std::string warnings;
  for (const auto& warning : result.warnings()) absl::StrAppend(&warnings, warning.message(), "\n");
  EXPECT_THAT(warnings, AllOf(HasSubstr("\"js@database:account-x1\" holds a design document in "
                                        "language \"javascript (none given)\""),
                              HasSubstr("language \"erlang\""),
                              HasSubstr("has validate_doc_update that is not a function name"),
                              HasSubstr("has views.lib that is not a function name"),
                              HasSubstr("has views.v.reduce \"_cnt\", which is not a builtin "
                                        "reduce of CouchDB 3.4"),
                              HasSubstr("_top_N, _bottom_N, _first and _last came with CouchDB "
                                        "3.5")));
}

// CouchDB's own languages in any case, and Mango's "query", as cnp upload refuses them: an entry
// in "JavaScript" with a named validate_doc_update was written, and then CouchDB refused every
// write to that database with compilation_error (found by a review).
TEST_F(SyncIntegrationTest, CouchDbsOwnLanguagesAreSkippedInAnyCaseAndQueryToo) {
  for (const char* db : {"reg11", "account-l1"}) CreateDatabase(db);
  ASSERT_TRUE(Register("reg11",
                       "towns:\n"
                       "  databases: account-l1\n"
                       "  views: {by_town: myviews.townmap}\n")
                  .status.ok());
  auto plant = [&](const std::string& name, const std::string& design) {
    absl::StatusOr<couchdb::HttpResponse> put = couch_->Put(
        absl::StrCat("/reg11/", name, "@database:account-l1"),
        absl::StrCat(R"({"type":"cnp_design_document","name":")", name,
                     R"(","target":{"databases":["account-l1"]},"design_document":)", design,
                     "}"));
    ASSERT_TRUE(put.ok() && put->status == 201) << name;
  };
  plant("jsc", R"({"_id":"_design/jsc","language":"JavaScript",)"
               R"("validate_doc_update":"myviews.townmap|1"})");
  plant("erc", R"({"_id":"_design/erc","language":"ERLANG","views":{"v":{"map":"myviews.townmap|1"}}})");
  plant("mango", R"({"_id":"_design/mango","language":"query","views":{"v":{"map":"myviews.townmap|1"}}})");

  UploadResult result = SyncOnce("reg11");
  EXPECT_EQ(result.Outcome("_design/towns", "account-l1").action(), v1::DesignDocOutcome::CREATED)
      << result.Dump();
  for (const char* name : {"jsc", "erc", "mango"}) {
    EXPECT_FALSE(Read(absl::StrCat("/account-l1/_design/", name)).HasMember("_id")) << name;
  }
  // Writes to the database still work.
  absl::StatusOr<couchdb::HttpResponse> write = couch_->Put("/account-l1/doc1", R"({"town":"Oslo"})");
  ASSERT_TRUE(write.ok());
  EXPECT_EQ(write->status, 201) << write->body;
  std::string warnings;
  for (const auto& warning : result.warnings()) absl::StrAppend(&warnings, warning.message(), "\n");
  EXPECT_THAT(warnings, AllOf(HasSubstr("\"jsc@database:account-l1\" holds a design document in "
                                        "language \"JavaScript\", which is CouchDB's own JavaScript"),
                              HasSubstr("language \"ERLANG\", which is CouchDB's own Erlang"),
                              HasSubstr("language \"query\", which is CouchDB's own Mango")));
}

// CouchDB's own fields in an entry's design document are instructions, not content: "_deleted"
// deleted a hand-made design document (and every later pass failed with "changed by someone
// else while syncing"), "_attachments" put HTML on CouchDB's origin (found by a review). Such
// an entry is skipped with a warning naming the field; a "_rev" is dropped. The warnings about
// the registry as a whole are marked [REGISTRY], not [REGISTRY/].
TEST_F(SyncIntegrationTest, EntriesWithCouchDbsOwnFieldsAreSkipped) {
  for (const char* db : {"reg12", "victim10"}) CreateDatabase(db);
  absl::StatusOr<couchdb::HttpResponse> hand_made = couch_->Put(
      "/victim10/_design/vv",
      R"({"language":"python","views":{"v":{"map":"myviews.townmap"}},"precious":true})");
  ASSERT_TRUE(hand_made.ok() && hand_made->status == 201);
  auto plant = [&](const std::string& name, const std::string& design) {
    absl::StatusOr<couchdb::HttpResponse> put = couch_->Put(
        absl::StrCat("/reg12/", name, "@database:victim10"),
        absl::StrCat(R"({"type":"cnp_design_document","name":")", name,
                     R"(","target":{"databases":["victim10"]},"design_document":)", design,
                     "}"));
    ASSERT_TRUE(put.ok() && put->status == 201) << name;
  };
  plant("vv", R"({"_id":"_design/vv","_deleted":true,"language":"python",)"
              R"("views":{"v":{"map":"myviews.townmap"}}})");
  plant("att", R"({"_id":"_design/att","language":"python","views":{"v":{"map":"myviews.townmap"}},)"
               R"("_attachments":{"x.html":{"content_type":"text/html","data":"PGgxPmhpPC9oMT4="}}})");
  plant("withrev", R"({"_id":"_design/withrev","_rev":"7-abc","language":"python",)"
                   R"("views":{"v":{"map":"myviews.townmap"}}})");

  auto no_env = [](const char*) -> std::optional<std::string> { return std::nullopt; };
  for (int pass = 0; pass < 2; ++pass) {
    std::ostringstream out, err;
    int status = client::sync::RunSync({"cnp sync", "--once", server_->url(), "reg12"},
                                       {.out = out, .err = err, .env = no_env});
    EXPECT_EQ(status, 0) << out.str() << err.str();
    EXPECT_THAT(err.str(), AllOf(HasSubstr("warning: [reg12] registry entry \"vv@database:victim10\" "
                                           "has a design document with the field \"_deleted\""),
                                 HasSubstr("warning: [reg12] registry entry \"att@database:victim10\" "
                                           "has a design document with the field \"_attachments\""),
                                 Not(HasSubstr("_rev")), Not(HasSubstr("[reg12/]")),
                                 Not(HasSubstr("error"))));
    EXPECT_THAT(out.str(), HasSubstr(pass == 0 ? "created victim10/_design/withrev"
                                               : "unchanged victim10/_design/withrev"));
    EXPECT_THAT(out.str(), Not(HasSubstr("_design/vv")));
  }
  rapidjson::Document vv = Read("/victim10/_design/vv");
  ASSERT_TRUE(vv.HasMember("precious")) << couchdb::ToJson(vv);
  EXPECT_EQ(std::string(vv["_rev"].GetString()).substr(0, 2), "1-");
  EXPECT_FALSE(Read("/victim10/_design/att").HasMember("_id"));
}

// Whoever may write the registry must not reach CouchDB's own databases and design documents:
// _users/_design/_auth is the rule that keeps users from giving themselves roles.
TEST_F(SyncIntegrationTest, SystemDatabasesAndDesignDocumentsNeedTheOperatorsFlag) {
  for (const char* db : {"reg10", "account-sys1"}) CreateDatabase(db);
  const std::string auth_before = couchdb::ToJson(Read("/_users/_design/_auth"));
  auto plant = [&](const std::string& id, const std::string& name, const std::string& targets) {
    absl::StatusOr<couchdb::HttpResponse> put = couch_->Put(
        absl::StrCat("/reg10/", id),
        absl::StrCat(R"({"type":"cnp_design_document","name":")", name,
                     R"(","target":{"databases":)", targets, R"(},"design_document":)",
                     R"({"_id":"_design/)", name,
                     R"(","language":"python","validate_doc_update":"fns.val|1"}})"));
    ASSERT_TRUE(put.ok() && put->status == 201) << id;
  };
  plant("a", "_auth", R"(["_users","_*"])");
  plant("b", "_private", R"(["account-sys1"])");
  plant("c", "guard", R"(["_users","_rep*","account-sys1"])");

  UploadResult result = SyncOnce("reg10");
  EXPECT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
  EXPECT_EQ(couchdb::ToJson(Read("/_users/_design/_auth")), auth_before);
  EXPECT_FALSE(Read("/_replicator/_design/_auth").HasMember("_id"));
  EXPECT_FALSE(Read("/account-sys1/_design/_private").HasMember("_id"));
  EXPECT_FALSE(Read("/_users/_design/guard").HasMember("_id"));
  EXPECT_FALSE(Read("/_replicator/_design/guard").HasMember("_id"));
  // The entry's other targets are still served.
  EXPECT_EQ(result.Outcome("_design/guard", "account-sys1").action(), v1::DesignDocOutcome::CREATED)
      << result.Dump();
  for (const auto& o : result.outcomes()) EXPECT_NE(o.database()[0], '_') << o.ShortDebugString();
  std::string warnings;
  for (const auto& warning : result.warnings()) absl::StrAppend(&warnings, warning.message(), "\n");
  EXPECT_THAT(warnings,
              AllOf(HasSubstr("registry entry \"a\" names _design/_auth"),
                    HasSubstr("registry entry \"b\" names _design/_private"),
                    HasSubstr("registry entry \"c\" targets \"_users\""),
                    HasSubstr("registry entry \"c\" targets \"_rep*\""),
                    HasSubstr("--allow-system-databases")))
      << warnings;

  // The command says so too, and still exits 0: the rest is in place.
  std::ostringstream out, err;
  auto no_env = [](const char*) -> std::optional<std::string> { return std::nullopt; };
  EXPECT_EQ(client::sync::RunSync({"cnp sync", "--once", server_->url(), "reg10"},
                                  {.out = out, .err = err, .env = no_env}),
            0)
      << out.str() << err.str();
  EXPECT_THAT(out.str() + err.str(), HasSubstr("refused without --allow-system-databases"));
  EXPECT_THAT(out.str(), Not(HasSubstr("_users/_design")));

  // The operator's flag lets them through (entry a goes first: pouchdb-server's _users needs
  // its own _auth).
  rapidjson::Document a = Read("/reg10/a");
  ASSERT_TRUE(a.HasMember("_rev"));
  absl::StatusOr<couchdb::HttpResponse> deleted =
      couch_->Delete(absl::StrCat("/reg10/a?rev=", a["_rev"].GetString()));
  ASSERT_TRUE(deleted.ok() && deleted->status == 200);
  UploadResult allowed = SyncOnce("reg10", {.allow_system_databases = true});
  EXPECT_EQ(allowed.Outcome("_design/guard", "_replicator").action(),
            v1::DesignDocOutcome::CREATED)
      << allowed.Dump();
  EXPECT_EQ(allowed.Outcome("_design/_private", "account-sys1").action(),
            v1::DesignDocOutcome::CREATED)
      << allowed.Dump();
}

TEST_F(SyncIntegrationTest, EntriesThatDisagreeOnOneDatabaseAreAConflictNotAFlipFlop) {
  for (const char* db : {"reg4", "account-c1"}) CreateDatabase(db);
  ASSERT_TRUE(Register("reg4", TownsFor("account-*")).status.ok());
  runner_.Define("myviews.townmap", 200);
  ASSERT_TRUE(Register("reg4",
                       "towns:\n"
                       "  databases: account-c1\n"
                       "  views: {by_town: myviews.townmap}\n")
                  .status.ok());
  UploadResult result = SyncOnce("reg4");
  EXPECT_TRUE(absl::IsFailedPrecondition(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_THAT(result.errors()[0].message(),
              HasSubstr("both target account-c1 with different _design/towns"));
  EXPECT_FALSE(Read("/account-c1/_design/towns").HasMember("_id"));
}

TEST_F(SyncIntegrationTest, ARemovedEntryTakesOutOnlyTheDesignDocumentsSyncPutThereUnchanged) {
  for (const char* db : {"reg6", "account-m1", "account-m2", "account-m3"}) CreateDatabase(db);
  // account-m2's towns is hand-made before cnp sync ever runs: sync updates it, keeping its
  // own view, but it never becomes cnp sync's.
  absl::StatusOr<couchdb::HttpResponse> hand_made = couch_->Put(
      "/account-m2/_design/towns", R"({"language": "python", "views": {"mine": {"map": "hand.made|1"}}})");
  ASSERT_TRUE(hand_made.ok() && hand_made->status == 201);
  const std::string yaml = TownsFor("account-m*");
  ASSERT_TRUE(Register("reg6", yaml).status.ok());
  UploadResult result = SyncOnce("reg6");
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  EXPECT_EQ(result.Outcome("_design/towns", "account-m1").action(), v1::DesignDocOutcome::CREATED);
  EXPECT_EQ(result.Outcome("_design/towns", "account-m2").action(), v1::DesignDocOutcome::UPDATED);
  EXPECT_EQ(result.Outcome("_design/towns", "account-m3").action(), v1::DesignDocOutcome::CREATED);
  // Someone edits account-m3's copy by hand after cnp sync wrote it.
  rapidjson::Document m3 = Read("/account-m3/_design/towns");
  m3.AddMember("note", "edited by hand", m3.GetAllocator());
  absl::StatusOr<couchdb::HttpResponse> edited = couch_->Put("/account-m3/_design/towns", couchdb::ToJson(m3));
  ASSERT_TRUE(edited.ok() && edited->status == 201);

  // The operator removes it from the registry: the entry becomes a tombstone.
  auto no_env = [](const char*) -> std::optional<std::string> { return std::nullopt; };
  std::ostringstream out, err;
  int status = client::upload::RunUpload({"cnp upload", "--register=reg6", "--remove", server_->url(), "towns"},
                                         {.out = out, .err = err, .env = no_env});
  EXPECT_EQ(status, 0) << out.str() << err.str();
  EXPECT_THAT(out.str(), HasSubstr("removed reg6/towns@classification:account"));
  rapidjson::Document entry = Read("/reg6/towns%40classification%3Aaccount");
  ASSERT_TRUE(entry.HasMember("removed")) << couchdb::ToJson(entry);
  EXPECT_TRUE(entry["removed"].GetBool());
  EXPECT_TRUE(Read("/account-m1/_design/towns").HasMember("_id"));  // registering writes nothing in place

  // A dry run says what it would take out, and takes nothing.
  UploadResult dry;
  client::sync::RegistrySync dry_sync(*couch_, "reg6", {.dry_run = true},
                                      [&](const v1::UploadEvent& e) { dry.events.push_back(e); });
  ASSERT_TRUE(dry_sync.SyncAll().ok()) << dry.Dump();
  EXPECT_EQ(dry.Outcome("_design/towns", "account-m1").action(), v1::DesignDocOutcome::WOULD_REMOVE);
  EXPECT_TRUE(Read("/account-m1/_design/towns").HasMember("_id"));

  result = SyncOnce("reg6");
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  EXPECT_EQ(result.Outcome("_design/towns", "account-m1").action(), v1::DesignDocOutcome::REMOVED)
      << result.Dump();
  EXPECT_FALSE(Read("/account-m1/_design/towns").HasMember("_id"));
  EXPECT_FALSE(Read("/account-m1/_local/cnp-sync%3Atowns").HasMember("_id"));
  // The hand-made one and the hand-edited one stay, and the warnings name them.
  EXPECT_TRUE(Read("/account-m2/_design/towns")["views"].HasMember("mine"));
  EXPECT_EQ(std::string(Read("/account-m3/_design/towns")["note"].GetString()), "edited by hand");
  const std::vector<std::string> warnings = result.problem_messages();
  EXPECT_THAT(warnings, UnorderedElementsAre(
                            HasSubstr("_design/towns in account-m2 was not put there by cnp sync from reg6"),
                            HasSubstr("_design/towns in account-m3 was changed by someone else after cnp sync wrote it")));

  // Registering it again brings it back everywhere.
  ASSERT_TRUE(Register("reg6", yaml).status.ok());
  result = SyncOnce("reg6");
  EXPECT_EQ(result.Outcome("_design/towns", "account-m1").action(), v1::DesignDocOutcome::CREATED)
      << result.Dump();

  // A name the registry does not have is an error that says so.
  std::ostringstream out2, err2;
  status = client::upload::RunUpload({"cnp upload", "--register=reg6", "--remove", server_->url(), "townz"},
                                     {.out = out2, .err = err2, .env = no_env});
  EXPECT_EQ(status, 1);
  EXPECT_THAT(err2.str(), HasSubstr("the registry \"reg6\" has no entry for \"townz\""));
  // With the entry it most likely meant, as for every other misspelt name.
  EXPECT_THAT(err2.str(), HasSubstr("; did you mean \"towns\"?"));
}

// A copy cnp sync wrote that also has a conflicting revision (replication into the database):
// removing cnp sync's revision makes the other one the design document. The pass said
// "removed" and nothing more; only the next pass warned of it (found by a probe).
TEST_F(SyncIntegrationTest, ARemovalSaysWhenAConflictingRevisionStaysInPlace) {
  ASSERT_NO_FATAL_FAILURE(SyncThenReplicateAConflict("reg_c", "account-v*", "account-v1"));
  RemoveEntry("reg_c", "towns");
  UploadResult result = SyncOnce("reg_c");
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  EXPECT_EQ(result.Outcome("_design/towns", "account-v1").action(), v1::DesignDocOutcome::REMOVED);
  const std::vector<std::string> warnings = result.problem_messages();
  EXPECT_THAT(warnings, UnorderedElementsAre(HasSubstr(
                            "_design/towns in account-v1 also had 1 conflicting revision(s) "
                            "(replication?), which this database's record does not vouch for; one "
                            "of them is _design/towns now: left in place")));
  EXPECT_EQ(std::string(Read("/account-v1/_design/towns")["views"]["by_town"]["map"].GetString()),
            "myviews.townmap|7");
}

// A conflicting revision of a design document sync keeps (replication, new_edits=false) is
// left as it is, and said: CouchDB serves it again if the winner is deleted (a probe found it
// left without a word).
TEST_F(SyncIntegrationTest, AConflictingRevisionOfAKeptDesignDocumentIsSaid) {
  ASSERT_NO_FATAL_FAILURE(SyncThenReplicateAConflict("reg_cf", "account-cf*", "account-cf1"));
  UploadResult result = SyncOnce("reg_cf");
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  const std::vector<std::string> warnings = result.problem_messages();
  EXPECT_THAT(warnings, UnorderedElementsAre(HasSubstr(
                            "_design/towns in account-cf1 has 1 conflicting revision(s) (replication?), "
                            "left as they are: CouchDB serves one of them again if the winning revision "
                            "is deleted; delete them (DELETE /account-cf1/_design/towns?rev=1-0000")))
      << result.Dump();
}

// A design document cnp sync put there from another registry is not this registry's to
// remove, and the warning says so (not that there is no record at all).
TEST_F(SyncIntegrationTest, ARemovalLeavesWhatAnotherRegistrysSyncWroteAndSaysWhose) {
  for (const char* db : {"reg7", "account-p1", "account-p2"}) CreateDatabase(db);
  ASSERT_TRUE(Register("reg7", TownsFor("account-p*")).status.ok());
  UploadResult result = SyncOnce("reg7");
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  // account-p1's record now names another registry (its sync wrote the same document there).
  rapidjson::Document record = Read("/account-p1/_local/cnp-sync%3Atowns");
  ASSERT_TRUE(record.HasMember("registry")) << couchdb::ToJson(record);
  record["registry"].SetString("reg-other", record.GetAllocator());
  absl::StatusOr<couchdb::HttpResponse> put =
      couch_->Put("/account-p1/_local/cnp-sync%3Atowns", couchdb::ToJson(record));
  ASSERT_TRUE(put.ok() && (put->status == 201 || put->status == 200)) << put.status();
  // account-p2 lost its record altogether.
  rapidjson::Document p2 = Read("/account-p2/_local/cnp-sync%3Atowns");
  absl::StatusOr<couchdb::HttpResponse> gone = couch_->Delete(
      absl::StrCat("/account-p2/_local/cnp-sync%3Atowns?rev=", p2["_rev"].GetString()));
  ASSERT_TRUE(gone.ok() && gone->status == 200) << gone.status();

  RemoveEntry("reg7", "towns");
  result = SyncOnce("reg7");
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  EXPECT_TRUE(Read("/account-p1/_design/towns").HasMember("_id"));
  EXPECT_TRUE(Read("/account-p2/_design/towns").HasMember("_id"));
  const std::vector<std::string> warnings = result.problem_messages();
  EXPECT_THAT(warnings,
              UnorderedElementsAre(
                  AllOf(HasSubstr("_design/towns in account-p1 was not put there by cnp sync from reg7"),
                        HasSubstr("its _local/cnp-sync:towns record says cnp sync from reg-other wrote it"),
                        Not(HasSubstr("no _local/cnp-sync:towns record"))),
                  AllOf(HasSubstr("_design/towns in account-p2 was not put there by cnp sync from reg7"),
                        HasSubstr("(no _local/cnp-sync:towns record)"))));
}

// Narrowing an entry's target (the same entry id, a classification that matches fewer
// databases) takes its copies out of the databases it no longer targets, as a removal would:
// only those cnp sync wrote and nobody changed since.
TEST_F(SyncIntegrationTest, NarrowingATargetTakesOutTheCopiesItNoLongerTargets) {
  for (const char* db : {"regnarrow", "account-n1", "account-n2", "account-n3"}) CreateDatabase(db);
  const std::string wide = TownsFor("account-n*");
  ASSERT_TRUE(Register("regnarrow", wide).status.ok());
  UploadResult result = SyncOnce("regnarrow");
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  for (const char* db : {"account-n1", "account-n2", "account-n3"}) {
    EXPECT_EQ(result.Outcome("_design/towns", db).action(), v1::DesignDocOutcome::CREATED) << db;
  }
  // account-n3's copy is edited by hand: it is no longer only cnp sync's.
  rapidjson::Document n3 = Read("/account-n3/_design/towns");
  n3.AddMember("note", "edited by hand", n3.GetAllocator());
  absl::StatusOr<couchdb::HttpResponse> edited =
      couch_->Put("/account-n3/_design/towns", couchdb::ToJson(n3));
  ASSERT_TRUE(edited.ok() && edited->status == 201);

  std::string narrow = wide;
  narrow.replace(narrow.find("account-n*"), 10, "account-n1");
  ASSERT_TRUE(Register("regnarrow", narrow).status.ok());
  result = SyncOnce("regnarrow");
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  EXPECT_EQ(result.Outcome("_design/towns", "account-n1").action(), v1::DesignDocOutcome::UNCHANGED);
  EXPECT_EQ(result.Outcome("_design/towns", "account-n2").action(), v1::DesignDocOutcome::REMOVED)
      << result.Dump();
  EXPECT_FALSE(Read("/account-n2/_design/towns").HasMember("_id"));
  EXPECT_FALSE(Read("/account-n2/_local/cnp-sync%3Atowns").HasMember("_id"));
  EXPECT_TRUE(Read("/account-n3/_design/towns").HasMember("note"));
  std::vector<std::string> warnings;
  for (const v1::UploadProblem& p : result.warnings()) warnings.push_back(p.message());
  EXPECT_THAT(warnings,
              ElementsAre(HasSubstr("the registry entry \"towns@classification:account\" no longer "
                                    "targets account-n3, but _design/towns in account-n3 was "
                                    "changed by someone else after cnp sync wrote it")));

  // Removing the entry then takes out the copy it still targets.
  RemoveEntry("regnarrow", "towns");
  result = SyncOnce("regnarrow");
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  EXPECT_EQ(result.Outcome("_design/towns", "account-n1").action(), v1::DesignDocOutcome::REMOVED);
  EXPECT_FALSE(Read("/account-n1/_design/towns").HasMember("_id"));
}

// --remove only marks entries: --staged makes no sense with it and is refused; --dry-run says
// what it would mark and writes nothing; without --register there is no registry to mark in.
TEST_F(SyncIntegrationTest, RemoveRefusesStagedNeedsRegisterAndDryRunWritesNothing) {
  for (const char* db : {"reg8"}) CreateDatabase(db);
  ASSERT_TRUE(Register("reg8", TownsFor("account-q*")).status.ok());
  const std::string entry_path = "/reg8/towns%40classification%3Aaccount";
  const std::string rev_before = Read(entry_path)["_rev"].GetString();
  auto no_env = [](const char*) -> std::optional<std::string> { return std::nullopt; };
  auto run = [&](std::vector<std::string> args, std::string* out_text, std::string* err_text) {
    std::ostringstream out, err;
    int status = client::upload::RunUpload(args, {.out = out, .err = err, .env = no_env});
    *out_text = out.str();
    *err_text = err.str();
    return status;
  };
  std::string out, err;
  EXPECT_EQ(run({"cnp upload", "--register=reg8", "--remove", "--staged", server_->url(), "towns"}, &out, &err), 2);
  EXPECT_THAT(err, HasSubstr("--staged and --remove do not go together"));
  EXPECT_EQ(run({"cnp upload", "--remove", server_->url(), "towns"}, &out, &err), 2);
  EXPECT_THAT(err, HasSubstr("--remove takes design documents out of a registry: it needs --register"));
  // Found by a review: options --remove has no use for were taken and ignored.
  for (const char* unused : {"--target=unix:/tmp/x.sock", "--view-server=python3", "--drop-unknown-fields", "--tls"}) {
    EXPECT_EQ(run({"cnp upload", "--register=reg8", "--remove", unused, server_->url(), "towns"}, &out, &err), 2)
        << unused;
    // (TLS to the default target, a unix socket, is refused as such before that.)
    EXPECT_THAT(err, ::testing::AnyOf(HasSubstr("has no effect with --remove"),
                                      HasSubstr("is a unix socket, which never uses it")))
        << unused;
  }
  EXPECT_EQ(run({"cnp upload", "--register=reg8", "--remove", "--dry-run", server_->url(), "towns"}, &out, &err), 0)
      << out << err;
  EXPECT_THAT(out, HasSubstr("would remove reg8/towns@classification:account"));
  rapidjson::Document entry = Read(entry_path);
  EXPECT_EQ(std::string(entry["_rev"].GetString()), rev_before);
  EXPECT_FALSE(entry.HasMember("removed")) << couchdb::ToJson(entry);
}

TEST_F(SyncIntegrationTest, TheCommandRunsOnePassAndFollowingSaysWhyItCannotHere) {
  for (const char* db : {"reg5", "account-k1"}) CreateDatabase(db);
  ASSERT_TRUE(Register("reg5", kYaml).status.ok());
  std::ostringstream out, err;
  auto no_env = [](const char*) -> std::optional<std::string> { return std::nullopt; };
  int status = client::sync::RunSync({"cnp sync", "--once", server_->url(), "reg5"},
                                     {.out = out, .err = err, .env = no_env});
  EXPECT_EQ(status, 0) << out.str() << err.str();
  EXPECT_THAT(out.str(), HasSubstr("created account-k1/_design/towns"));

  // pouchdb-server has no _db_updates: without --once, the first pass is not even started.
  std::ostringstream out2, err2;
  status = client::sync::RunSync({"cnp sync", server_->url(), "reg5"},
                                 {.out = out2, .err = err2, .env = no_env});
  EXPECT_EQ(status, 1);
  EXPECT_THAT(err2.str(), HasSubstr("offers no _db_updates"));
  EXPECT_THAT(err2.str(), HasSubstr("cnp sync --once"));

  // A registry that does not exist: the message says to create it, as `cnp upload --register`
  // would say next (it said to register first, and that said to create it first).
  std::ostringstream out_missing, err_missing;
  status = client::sync::RunSync({"cnp sync", "--once", server_->url(), "noreg"},
                                 {.out = out_missing, .err = err_missing, .env = no_env});
  EXPECT_EQ(status, 1);
  EXPECT_THAT(err_missing.str(), HasSubstr("the registry database \"noreg\" does not exist at "));
  EXPECT_THAT(err_missing.str(), HasSubstr("; create it (PUT /noreg), then register design documents in "
                                           "it: cnp upload --register noreg COUCHDB_URL FILE.yml"));

  // A database's URL given as CouchDB's: every database looked missing under it, the registry
  // first ("does not exist; ... register design documents in it"). A usage error, as cnp
  // derive has it (it exited 1).
  std::ostringstream out3, err3;
  status = client::sync::RunSync({"cnp sync", "--once", server_->url() + "/reg5", "reg5"},
                                 {.out = out3, .err = err3, .env = no_env});
  EXPECT_EQ(status, 2);
  EXPECT_THAT(err3.str(), HasSubstr("/reg5 is the URL of the database reg5, not CouchDB's root"));
  EXPECT_THAT(err3.str(), Not(HasSubstr("register design documents in it")));

  // Found by a review: a URL that is not CouchDB at all was answered "the registry database
  // does not exist; register design documents first", as if CouchDB had said so.
  std::ostringstream out4, err4;
  status = client::sync::RunSync({"cnp sync", "--once", server_->url() + "/no/such/place", "reg5"},
                                 {.out = out4, .err = err4, .env = no_env});
  EXPECT_EQ(status, 1);
  EXPECT_THAT(err4.str(), HasSubstr("not CouchDB's root"));
  EXPECT_THAT(err4.str(), Not(HasSubstr("register design documents in it")));

  std::ostringstream help, none;
  EXPECT_EQ(client::sync::RunSync({"cnp sync", "--help"}, {.out = help, .err = none}), 0);
  EXPECT_THAT(help.str(), HasSubstr("Usage: cnp sync [options] COUCHDB_URL REGISTRY_DB"));
  EXPECT_THAT(help.str(), HasSubstr("--once"));
}

// Found by a review: the registry was read in one _all_docs answer, so a registry past the
// answer limit (CouchClient's 64 MiB: many entries) stopped every pass and every --remove with
// RESOURCE_EXHAUSTED. It is read a page at a time, fewer rows while a page is too long.
TEST_F(SyncIntegrationTest, ARegistryLargerThanOneAnswerIsReadInPages) {
  CreateDatabase("regpage");
  CreateDatabase("pagetarget-1");
  std::string yaml = "classifications:\n  pages: \"pagetarget-*\"\n";
  for (int i = 0; i < 6; ++i) {
    absl::StrAppend(&yaml, "paged", i, ":\n  classification: pages\n  views:\n    by_town: myviews.townmap\n");
  }
  UploadResult registered = Register("regpage", yaml);
  ASSERT_TRUE(registered.status.ok()) << registered.status << "\n" << registered.Dump();
  absl::StatusOr<couchdb::HttpResponse> whole = couch_->Get("/regpage/_all_docs?include_docs=true");
  ASSERT_TRUE(whole.ok() && whole->status == 200);
  // Every answer shorter than the whole registry's.
  couchdb::CouchClient small({.base_url = server_->url(),
                              .max_response_bytes = static_cast<int64_t>(whole->body.size()) - 1});
  std::vector<v1::UploadEvent> events;
  client::sync::RegistrySync sync(small, "regpage", {}, [&](const v1::UploadEvent& e) { events.push_back(e); });
  absl::Status synced = sync.SyncAll();
  ASSERT_TRUE(synced.ok()) << synced;
  for (int i = 0; i < 6; ++i) {
    EXPECT_TRUE(Read(absl::StrCat("/pagetarget-1/_design/paged", i)).HasMember("views")) << i;
  }
  absl::Status removed = client::sync::RemoveRegistered(small, "regpage", {"paged5"}, /*dry_run=*/true, 3,
                                                        [&](const v1::UploadEvent& e) { events.push_back(e); });
  EXPECT_TRUE(removed.ok()) << removed;
}

}  // namespace
}  // namespace cnp::upload::testing
