// The Uploader against a real CouchDB-compatible server (pouchdb-server on loopback) with a
// fake worker pool for version resolution.
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rapidjson/pointer.h"
#include "common/couchdb/couch_client.h"
#include "common/couchdb/json.h"
#include "service/upload/uploader.h"
#include "tests/support/pouchdb_server.h"
#include "tests/support/fake_blocking_task_runner.h"
#include "tests/upload/upload_events.h"

namespace cnp::upload::testing {

using ::cnp::testing::PouchDbServer;
using ::cnp::testing::UnusedLoopbackPort;

namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

constexpr char kUser[] = "admin";
constexpr char kPassword[] = "s3cret-pw";

// pouchdb-server cannot create databases once an admin exists, so every database the tests
// use is created up front, then the admin.
const char* const kDatabases[] = {"create", "dry",   "kept",   "dropped", "conflict",
                                  "giveup", "acct-1", "acct-2", "other",  "dup-1",
                                  "bad",    "staged", "secret", "cancel",
                                  "staged-race", "staged-giveup", "staged-own"};

constexpr char kLocationYaml[] =
    "location:\n"
    "    views:\n"
    "        towns:\n"
    "            map: myviews.townmap\n"
    "    validate_doc_update: myviews.validate\n";

class UploadIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<PouchDbServer>> started = PouchDbServer::Start();
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = started->release();
    couchdb::CouchClient anonymous({.base_url = server_->url()});
    for (const char* db : kDatabases) {
      absl::StatusOr<couchdb::HttpResponse> created = anonymous.Put(couchdb::DatabasePath(db), "");
      ASSERT_TRUE(created.ok() && created->status == 201) << db;
    }
    absl::StatusOr<couchdb::HttpResponse> admin =
        anonymous.Put(absl::StrCat("/_config/admins/", kUser), absl::StrCat("\"", kPassword, "\""));
    ASSERT_TRUE(admin.ok() && admin->status == 200);
  }

  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    runner_.Define("myviews.townmap", 123);
    runner_.Define("myviews.validate", 21);
  }

  v1::UploadRequest Request(const std::string& database, std::vector<v1::UploadFile> files) {
    v1::UploadRequest request;
    request.set_couchdb_url(server_->url());
    request.mutable_credentials()->set_username(kUser);
    request.mutable_credentials()->set_password(kPassword);
    request.set_database(database);
    for (auto& f : files) *request.add_files() = std::move(f);
    return request;
  }

  UploadResult Upload(const v1::UploadRequest& request) {
    Uploader uploader(runner_, options_);
    return RunUpload(uploader, request);
  }

  // The stored document, or a null value when there is none.
  rapidjson::Document Stored(const std::string& database, const std::string& name) {
    absl::StatusOr<couchdb::HttpResponse> got = couch_.Get(couchdb::DesignDocPath(database, name));
    EXPECT_TRUE(got.ok()) << got.status();
    rapidjson::Document doc;
    if (got.ok() && got->status == 200) doc.Parse(got->body.c_str());
    return doc;
  }

  void Put(const std::string& database, const std::string& name, const std::string& json) {
    absl::StatusOr<couchdb::HttpResponse> put = couch_.Put(couchdb::DesignDocPath(database, name), json);
    ASSERT_TRUE(put.ok() && put->status == 201) << (put.ok() ? put->body : "unreachable");
  }

  // pouchdb-server's log of the requests `body` made, bracketed by marker requests.
  std::string LoggedDuring(const std::function<void()>& body) {
    static int markers = 0;
    std::string begin = absl::StrCat("/_marker_", ++markers);
    std::string end = absl::StrCat("/_marker_", ++markers);
    EXPECT_TRUE(couch_.Get(begin).ok());
    EXPECT_TRUE(server_->WaitForOutput(begin, absl::Seconds(30)));
    body();
    EXPECT_TRUE(couch_.Get(end).ok());
    EXPECT_TRUE(server_->WaitForOutput(end, absl::Seconds(30)));
    std::string all = server_->output();
    size_t from = all.find(begin);
    from = all.find('\n', from);
    return all.substr(from, all.find(end) - from);
  }

  static std::string String(const rapidjson::Value& doc, const char* pointer) {
    const rapidjson::Value* v = rapidjson::Pointer(pointer).Get(doc);
    return v != nullptr && v->IsString() ? v->GetString() : "<absent>";
  }

  static PouchDbServer* server_;
  ::cnp::testing::FakeBlockingTaskRunner runner_;
  Uploader::Options options_;
  couchdb::CouchClient couch_{{.base_url = server_->url(), .username = kUser, .password = kPassword}};
};

PouchDbServer* UploadIntegrationTest::server_ = nullptr;

TEST_F(UploadIntegrationTest, CreatesThenLeavesAloneThenUpdates) {
  v1::UploadRequest request = Request("create", {File("design.yml", kLocationYaml)});

  UploadResult first = Upload(request);
  ASSERT_TRUE(first.status.ok()) << first.status << "\n" << first.Dump();
  v1::DesignDocOutcome created = first.Outcome("_design/location", "create");
  EXPECT_EQ(created.action(), v1::DesignDocOutcome::CREATED);
  EXPECT_TRUE(created.index_rebuild());
  EXPECT_THAT(created.rebuilt_views(), ElementsAre("towns"));
  rapidjson::Document stored = Stored("create", "location");
  EXPECT_EQ(String(stored, "/views/towns/map"), "myviews.townmap|123");
  EXPECT_EQ(String(stored, "/validate_doc_update"), "myviews.validate|21");
  EXPECT_EQ(String(stored, "/language"), "python");
  EXPECT_EQ(String(stored, "/_rev"), created.rev());

  UploadResult second = Upload(request);
  ASSERT_TRUE(second.status.ok()) << second.Dump();
  v1::DesignDocOutcome unchanged = second.Outcome("_design/location", "create");
  EXPECT_EQ(unchanged.action(), v1::DesignDocOutcome::UNCHANGED);
  EXPECT_EQ(unchanged.rev(), created.rev());
  EXPECT_EQ(String(Stored("create", "location"), "/_rev"), created.rev());  // no new revision

  runner_.Define("myviews.townmap", 124);
  UploadResult third = Upload(request);
  ASSERT_TRUE(third.status.ok()) << third.Dump();
  v1::DesignDocOutcome updated = third.Outcome("_design/location", "create");
  EXPECT_EQ(updated.action(), v1::DesignDocOutcome::UPDATED);
  ASSERT_THAT(updated.changes(), SizeIs(1));
  EXPECT_EQ(updated.changes(0).path(), "views.towns.map");
  EXPECT_EQ(updated.changes(0).old_json(), "\"myviews.townmap|123\"");
  EXPECT_EQ(updated.changes(0).new_json(), "\"myviews.townmap|124\"");
  EXPECT_TRUE(updated.index_rebuild());
  EXPECT_THAT(updated.rebuilt_views(), ElementsAre("towns"));
  EXPECT_EQ(String(Stored("create", "location"), "/views/towns/map"), "myviews.townmap|124");
  EXPECT_NE(updated.rev(), created.rev());
}

TEST_F(UploadIntegrationTest, ChangingOnlyValidationSaysNoIndexRebuild) {
  Put("create", "validation",
      R"({"language": "python", "views": {"towns": {"map": "myviews.townmap|123"}},
          "validate_doc_update": "myviews.validate|20"})");
  UploadResult result = Upload(Request(
      "create", {File("v.yml", "validation:\n  views: {towns: myviews.townmap}\n"
                               "  validate_doc_update: myviews.validate\n")}));
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  v1::DesignDocOutcome outcome = result.Outcome("_design/validation", "create");
  EXPECT_EQ(outcome.action(), v1::DesignDocOutcome::UPDATED);
  EXPECT_FALSE(outcome.index_rebuild());
  EXPECT_THAT(outcome.rebuilt_views(), IsEmpty());
}

TEST_F(UploadIntegrationTest, DryRunShowsTheDiffAndWritesNothing) {
  v1::UploadRequest request = Request("dry", {File("design.yml", kLocationYaml)});
  request.set_dry_run(true);
  UploadResult would_create = Upload(request);
  ASSERT_TRUE(would_create.status.ok()) << would_create.Dump();
  EXPECT_EQ(would_create.Outcome("_design/location", "dry").action(),
            v1::DesignDocOutcome::WOULD_CREATE);
  EXPECT_TRUE(Stored("dry", "location").IsNull());

  Put("dry", "location",
      R"({"language": "python", "views": {"towns": {"map": "myviews.townmap|1"}},
          "validate_doc_update": "myviews.validate|21"})");
  std::string rev = String(Stored("dry", "location"), "/_rev");
  UploadResult would_update = Upload(request);
  ASSERT_TRUE(would_update.status.ok()) << would_update.Dump();
  v1::DesignDocOutcome outcome = would_update.Outcome("_design/location", "dry");
  EXPECT_EQ(outcome.action(), v1::DesignDocOutcome::WOULD_UPDATE);
  ASSERT_THAT(outcome.changes(), SizeIs(1));
  EXPECT_EQ(outcome.changes(0).path(), "views.towns.map");
  EXPECT_THAT(outcome.rebuilt_views(), ElementsAre("towns"));
  EXPECT_EQ(String(Stored("dry", "location"), "/_rev"), rev);
  EXPECT_EQ(String(Stored("dry", "location"), "/views/towns/map"), "myviews.townmap|1");
}

TEST_F(UploadIntegrationTest, FieldsTheYamlDoesNotMentionAreKeptAndReported) {
  Put("kept", "location",
      R"({"language": "python", "owner": "ops team",
          "views": {"towns": {"map": "myviews.townmap|1"}, "legacy": {"map": "old.fn|3"}}})");
  UploadResult result = Upload(Request("kept", {File("design.yml", kLocationYaml)}));
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  v1::DesignDocOutcome outcome = result.Outcome("_design/location", "kept");
  EXPECT_EQ(outcome.action(), v1::DesignDocOutcome::UPDATED);
  EXPECT_THAT(outcome.kept_fields(), UnorderedElementsAre("views.legacy", "owner"));
  rapidjson::Document stored = Stored("kept", "location");
  EXPECT_EQ(String(stored, "/owner"), "ops team");
  EXPECT_EQ(String(stored, "/views/legacy/map"), "old.fn|3");
  EXPECT_EQ(String(stored, "/views/towns/map"), "myviews.townmap|123");
}

TEST_F(UploadIntegrationTest, UnmentionedFieldsAreDroppedOnlyWhenAsked) {
  Put("dropped", "location",
      R"({"language": "python", "owner": "ops team",
          "views": {"towns": {"map": "myviews.townmap|123"}, "legacy": {"map": "old.fn|3"}},
          "validate_doc_update": "myviews.validate|21"})");
  v1::UploadRequest request = Request("dropped", {File("design.yml", kLocationYaml)});
  request.set_drop_unknown_fields(true);
  UploadResult result = Upload(request);
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  v1::DesignDocOutcome outcome = result.Outcome("_design/location", "dropped");
  EXPECT_THAT(outcome.dropped_fields(), UnorderedElementsAre("views.legacy", "owner"));
  rapidjson::Document stored = Stored("dropped", "location");
  EXPECT_FALSE(stored.HasMember("owner"));
  EXPECT_FALSE(stored["views"].HasMember("legacy"));
}

TEST_F(UploadIntegrationTest, AConcurrentEditIsReReadAndKeptNotOverwritten) {
  Put("conflict", "location",
      R"({"language": "python", "views": {"towns": {"map": "myviews.townmap|1"}}})");
  int writes = 0;
  options_.before_write = [&](const std::string& db, const std::string& id) {
    if (++writes > 1) return;
    // Someone else saves the document between our read and our write.
    rapidjson::Document theirs = Stored(db, "location");
    theirs.AddMember("note", "edited by hand", theirs.GetAllocator());
    Put(db, "location", couchdb::ToJson(theirs));
  };
  UploadResult result = Upload(Request("conflict", {File("design.yml", kLocationYaml)}));
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  v1::DesignDocOutcome outcome = result.Outcome("_design/location", "conflict");
  EXPECT_EQ(outcome.action(), v1::DesignDocOutcome::UPDATED);
  EXPECT_EQ(outcome.conflict_retries(), 1);
  EXPECT_THAT(outcome.kept_fields(), ElementsAre("note"));
  ASSERT_THAT(result.warnings(), SizeIs(1));
  EXPECT_THAT(result.warnings()[0].message(), HasSubstr("changed by someone else"));
  rapidjson::Document stored = Stored("conflict", "location");
  EXPECT_EQ(String(stored, "/note"), "edited by hand");
  EXPECT_EQ(String(stored, "/views/towns/map"), "myviews.townmap|123");
  EXPECT_EQ(writes, 2);
}

TEST_F(UploadIntegrationTest, EndlessConflictsGiveUpWithoutOverwriting) {
  Put("giveup", "location", R"({"language": "python", "n": 0})");
  int edits = 0;
  options_.before_write = [&](const std::string& db, const std::string&) {
    rapidjson::Document theirs = Stored(db, "location");
    theirs["n"].SetInt(++edits);
    Put(db, "location", couchdb::ToJson(theirs));
  };
  v1::UploadRequest request = Request("giveup", {File("design.yml", kLocationYaml)});
  request.set_max_conflict_retries(2);
  UploadResult result = Upload(request);
  EXPECT_TRUE(absl::IsAborted(result.status)) << result.status;
  EXPECT_EQ(edits, 3);  // the first try and two retries
  rapidjson::Document stored = Stored("giveup", "location");
  EXPECT_EQ(stored["n"].GetInt(), 3);
  EXPECT_FALSE(stored.HasMember("views"));
  ASSERT_THAT(result.errors(), SizeIs(1));
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("gave up without overwriting"));
}

TEST_F(UploadIntegrationTest, DatabasesNamedAndMatchedByPatterns) {
  runner_.Define("acct.by_name", 2);
  UploadResult result = Upload(Request(
      "", {File("accounts.yml",
                "accounts:\n"
                "  databases: [\"acct-*\", other, \"nomatch-*\"]\n"
                "  views: {by_name: acct.by_name}\n")}));
  ASSERT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
  std::vector<std::string> written;
  for (const auto& o : result.outcomes()) {
    EXPECT_EQ(o.action(), v1::DesignDocOutcome::CREATED);
    written.push_back(o.database());
  }
  EXPECT_THAT(written, UnorderedElementsAre("acct-1", "acct-2", "other"));
  for (const char* db : {"acct-1", "acct-2", "other"}) {
    rapidjson::Document stored = Stored(db, "accounts");
    EXPECT_EQ(String(stored, "/views/by_name/map"), "acct.by_name|2") << db;
    EXPECT_FALSE(stored.HasMember("databases")) << db;
  }
  EXPECT_TRUE(Stored("_users", "accounts").IsNull());
  ASSERT_THAT(result.warnings(), SizeIs(1));
  EXPECT_THAT(result.warnings()[0].message(), HasSubstr("\"nomatch-*\" matches no database"));
  EXPECT_EQ(result.warnings()[0].location().line(), 2);
}

// A classification defined in one file and used in another, as Kazoo's "account" is.
TEST_F(UploadIntegrationTest, AClassificationTargetsTheDatabasesItsPatternsMatch) {
  runner_.Define("acct.by_owner", 5);
  UploadResult result = Upload(Request(
      "", {File("classes.yml", "classifications:\n  account: [\"acct-*\"]\n"),
           File("owners.yml",
                "owners:\n"
                "  classification: account\n"
                "  views: {by_owner: acct.by_owner}\n")}));
  ASSERT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
  std::vector<std::string> written;
  for (const auto& o : result.outcomes()) {
    EXPECT_EQ(o.action(), v1::DesignDocOutcome::CREATED);
    written.push_back(o.database());
  }
  EXPECT_THAT(written, UnorderedElementsAre("acct-1", "acct-2"));
  rapidjson::Document stored = Stored("acct-2", "owners");
  EXPECT_EQ(String(stored, "/views/by_owner/map"), "acct.by_owner|5");
  EXPECT_FALSE(stored.HasMember("classification"));
  EXPECT_TRUE(Stored("other", "owners").IsNull());
}

TEST_F(UploadIntegrationTest, TwoFilesTargetingOneDatabaseThroughAPatternWriteNothing) {
  runner_.Define("acct.by_name", 2);
  UploadResult result = Upload(Request(
      "", {File("a.yml", "twice:\n  databases: dup-1\n  views: {v: acct.by_name}\n"),
           File("b.yml", "twice:\n  databases: \"dup-*\"\n  views: {v: acct.by_name}\n")}));
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1));
  EXPECT_EQ(result.errors()[0].location().file(), "b.yml");
  EXPECT_THAT(result.errors()[0].message(),
              HasSubstr("also defined at a.yml:1 for database \"dup-1\""));
  EXPECT_TRUE(Stored("dup-1", "twice").IsNull());
}

// CouchDB's own databases and design documents hold its security rules (_users/_design/_auth
// keeps users from giving themselves roles): a YAML file reaches them only with the
// operator's allow_system_databases (cnp upload --allow-system-databases).
TEST_F(UploadIntegrationTest, SystemDatabasesAndDesignDocumentsNeedTheOperatorsFlag) {
  const std::string auth_before = couchdb::ToJson(Stored("_users", "_auth"));
  const std::vector<v1::UploadFile> files = {
      File("auth.yml", "_auth:\n  validate_doc_update: myviews.validate\n"),
      File("guard.yml",
           "guard:\n"
           "  databases: [\"_rep*\", _users, other]\n"
           "  validate_doc_update: myviews.validate\n"
           "plain:\n"
           "  validate_doc_update: myviews.validate\n")};
  for (bool registering : {false, true}) {
    v1::UploadRequest request = Request("_users", files);
    if (registering) request.set_register_database("other");
    UploadResult result = Upload(request);
    EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
    std::vector<std::string> refused;
    for (const auto& error : result.errors()) {
      // Registering, the design documents without databases: are refused for that as well.
      if (registering && absl::StrContains(error.message(), "names no databases")) continue;
      EXPECT_THAT(error.message(), HasSubstr("refused without --allow-system-databases"));
      refused.push_back(absl::StrCat(error.location().file(), ":", error.location().line(), " ",
                                     error.message().substr(0, error.message().find(':'))));
    }
    std::vector<std::string> expected = {
        "auth.yml:1 design document \"_auth\" names _design/_auth",
        "guard.yml:2 design document \"guard\" targets \"_rep*\"",
        "guard.yml:2 design document \"guard\" targets \"_users\""};
    // A registered design document names its own databases: the positional one is not used.
    if (!registering) {
      expected.push_back("auth.yml:1 design document \"_auth\" targets \"_users\"");
      expected.push_back("guard.yml:4 design document \"plain\" targets \"_users\"");
    }
    EXPECT_THAT(refused, ::testing::UnorderedElementsAreArray(expected)) << result.Dump();
    EXPECT_THAT(result.outcomes(), IsEmpty());
  }
  EXPECT_EQ(couchdb::ToJson(Stored("_users", "_auth")), auth_before);
  EXPECT_TRUE(Stored("other", "guard").IsNull());
  EXPECT_TRUE(Stored("_replicator", "guard").IsNull());

  // The operator's flag lets them through.
  v1::UploadRequest allowed = Request(
      "", {File("guard.yml",
                "guard:\n  databases: _replicator\n  validate_doc_update: myviews.validate\n")});
  allowed.set_allow_system_databases(true);
  UploadResult result = Upload(allowed);
  ASSERT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();
  EXPECT_EQ(String(Stored("_replicator", "guard"), "/validate_doc_update"), "myviews.validate|21");
}

TEST_F(UploadIntegrationTest, BadYamlOrBadFunctionsWriteNothing) {
  UploadResult result = Upload(Request(
      "bad", {File("good.yml", kLocationYaml),
              File("bad.yml", "broken:\n  views: {v: missing.module}\n  veiws: {}\n")}));
  EXPECT_TRUE(absl::IsInvalidArgument(result.status)) << result.status;
  EXPECT_THAT(result.errors(), SizeIs(2));
  EXPECT_THAT(result.outcomes(), IsEmpty());
  EXPECT_TRUE(Stored("bad", "location").IsNull());
  EXPECT_TRUE(Stored("bad", "broken").IsNull());
}

TEST_F(UploadIntegrationTest, AMissingDatabaseIsNamed) {
  UploadResult result = Upload(Request("no_such_db", {File("design.yml", kLocationYaml)}));
  EXPECT_TRUE(absl::IsNotFound(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1));
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("database \"no_such_db\" does not exist"));
}

// A database named outright that does not exist, among others that do: nothing is written
// anywhere (before, the design documents of the databases checked first were written, and the
// missing one was found in the middle of the writes).
TEST_F(UploadIntegrationTest, AMissingDatabaseAmongOthersMeansNothingIsWritten) {
  runner_.Define("acct.by_name", 2);
  UploadResult result = Upload(Request(
      "other", {File("p.yml",
                     "p1:\n"
                     "  views: {by_name: acct.by_name}\n"
                     "p2:\n"
                     "  databases: [acct-1, no_such_db]\n"
                     "  views: {by_name: acct.by_name}\n")}));
  EXPECT_TRUE(absl::IsNotFound(result.status)) << result.status << "\n" << result.Dump();
  ASSERT_THAT(result.errors(), SizeIs(1)) << result.Dump();
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("database \"no_such_db\" does not exist"));
  EXPECT_THAT(result.outcomes(), IsEmpty()) << result.Dump();
  // The error event names the database; the status counts, so that cnp does not print the
  // same line twice.
  EXPECT_EQ(result.status.message(),
            "1 target database could not be used (its error above); nothing was written");
  EXPECT_TRUE(Stored("other", "p1").IsNull());
  EXPECT_TRUE(Stored("acct-1", "p2").IsNull());
}

TEST_F(UploadIntegrationTest, AWrongPasswordIsRefusedAndNeverShown) {
  v1::UploadRequest request = Request("secret", {File("design.yml", kLocationYaml)});
  request.mutable_credentials()->set_password("wrong-horse-battery");
  UploadResult result = Upload(request);
  EXPECT_TRUE(absl::IsUnauthenticated(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1));
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("refused the credentials"));
  EXPECT_THAT(result.Dump(), Not(HasSubstr("wrong-horse-battery")));
  EXPECT_THAT(std::string(result.status.message()), Not(HasSubstr("wrong-horse-battery")));
  EXPECT_TRUE(Stored("secret", "location").IsNull());
}

TEST_F(UploadIntegrationTest, CredentialsInTheUrlWorkAndAreNeverShown) {
  v1::UploadRequest request = Request("secret", {File("design.yml", kLocationYaml)});
  request.clear_credentials();
  request.set_couchdb_url(absl::StrCat("http://", kUser, ":", kPassword, "@127.0.0.1:",
                                       server_->port(), "/"));
  UploadResult result = Upload(request);
  ASSERT_TRUE(result.status.ok()) << result.status;
  EXPECT_EQ(result.Outcome("_design/location", "secret").action(),
            v1::DesignDocOutcome::CREATED);

  // And when it fails: a missing database, then a server that is down.
  request.set_database("not_there");
  UploadResult missing = Upload(request);
  EXPECT_FALSE(missing.status.ok());
  request.set_couchdb_url(
      absl::StrCat("http://", kUser, ":", kPassword, "@127.0.0.1:", UnusedLoopbackPort()));
  UploadResult down = Upload(request);
  EXPECT_FALSE(down.status.ok());
  for (const UploadResult* r : {&result, &missing, &down}) {
    EXPECT_THAT(r->Dump(), Not(HasSubstr(kPassword)));
    EXPECT_THAT(std::string(r->status.message()), Not(HasSubstr(kPassword)));
  }
}

TEST_F(UploadIntegrationTest, AServerThatIsDownIsSaidToBeUnreachable) {
  v1::UploadRequest request = Request("create", {File("design.yml", kLocationYaml)});
  request.set_couchdb_url(absl::StrCat("http://127.0.0.1:", UnusedLoopbackPort()));
  UploadResult result = Upload(request);
  EXPECT_TRUE(absl::IsUnavailable(result.status)) << result.status;
  ASSERT_THAT(result.errors(), SizeIs(1));
  EXPECT_THAT(result.errors()[0].message(), HasSubstr("cannot reach CouchDB at http://127.0.0.1:"));
}

// pouchdb-server has no indexer: the build finishes at once and _active_tasks is empty, so
// this checks the HTTP sequence of a staged deploy and its end state, not progress numbers.
TEST_F(UploadIntegrationTest, StagedDeployBuildsUnderAStagingIdThenMovesIntoPlace) {
  Put("staged", "location",
      R"({"language": "python", "views": {"towns": {"map": "myviews.townmap|1"}},
          "validate_doc_update": "myviews.validate|21"})");
  v1::UploadRequest request = Request("staged", {File("design.yml", kLocationYaml)});
  request.set_staged(true);
  UploadResult result;
  std::string log = LoggedDuring([&] { result = Upload(request); });
  ASSERT_TRUE(result.status.ok()) << result.status << "\n" << result.Dump();

  std::vector<std::string> phases;
  for (const auto& e : result.events) {
    if (e.has_progress()) {
      EXPECT_EQ(e.progress().id(), "_design/location__staging");
      phases.push_back(e.progress().phase());
    }
  }
  EXPECT_THAT(phases, ElementsAre("staged", "built", "cleaned"));
  EXPECT_EQ(result.Outcome("_design/location", "staged").action(),
            v1::DesignDocOutcome::UPDATED);
  EXPECT_EQ(String(Stored("staged", "location"), "/views/towns/map"), "myviews.townmap|123");
  EXPECT_TRUE(Stored("staged", "location__staging").IsNull());
  // pouchdb-server keeps no index state: the switch could not be checked, and the user is
  // told so rather than left to think it was.
  ASSERT_THAT(result.warnings(), SizeIs(1)) << result.Dump();
  EXPECT_THAT(result.warnings()[0].message(),
              HasSubstr("whether the live document took the built index over was not checked"));

  // The requests, in order, from pouchdb-server's log.
  std::vector<std::string> requests;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    for (const char* method : {"GET ", "PUT ", "DELETE "}) {
      size_t at = line.find(method);
      if (at != absl::string_view::npos && line.find("/staged") != absl::string_view::npos) {
        std::string request_line(line.substr(at));
        requests.push_back(request_line.substr(0, request_line.find(' ', strlen(method))));
      } else if (at != absl::string_view::npos && line.find("/_active_tasks") != absl::string_view::npos) {
        requests.push_back("GET /_active_tasks");
      }
    }
  }
  EXPECT_THAT(requests,
              ElementsAre("GET /staged", "GET /staged/_design/location",
                          "GET /staged/_design/location__staging",
                          "PUT /staged/_design/location__staging",
                          "GET /staged/_design/location__staging/_view/towns?limit=0&update=lazy",
                          "GET /_active_tasks",
                          "GET /staged/_design/location__staging/_view/towns?limit=0",
                          "GET /staged/_design/location__staging/_info",
                          "PUT /staged/_design/location",
                          ::testing::StartsWith("DELETE /staged/_design/location__staging?rev=")))
      << log;
}

// Another upload writes the same live document between our staged build and our write: the
// conflict re-read finds nothing left to write, and the staging document must still go (it
// was left for ever: later runs find the live document unchanged and never stage again).
TEST_F(UploadIntegrationTest, AStagedBuildWhoseDocumentAnotherUploadWroteIsStillCleanedUp) {
  Put("staged-race", "location",
      R"({"language": "python", "views": {"towns": {"map": "myviews.townmap|1"}}})");
  options_.before_write = [&](const std::string& db, const std::string&) {
    rapidjson::Document theirs = Stored(db, "location");
    theirs["views"]["towns"]["map"].SetString("myviews.townmap|123");
    theirs.AddMember("validate_doc_update", "myviews.validate|21", theirs.GetAllocator());
    Put(db, "location", couchdb::ToJson(theirs));
  };
  v1::UploadRequest request = Request("staged-race", {File("design.yml", kLocationYaml)});
  request.set_staged(true);
  UploadResult result = Upload(request);
  ASSERT_TRUE(result.status.ok()) << result.Dump();
  EXPECT_EQ(result.Outcome("_design/location", "staged-race").action(),
            v1::DesignDocOutcome::UNCHANGED);
  EXPECT_TRUE(Stored("staged-race", "location__staging").IsNull()) << result.Dump();
}

// An upload that gives up (conflicts past the limit) wrote no live document: its staging
// document serves nothing and is removed.
TEST_F(UploadIntegrationTest, AStagedUploadThatGivesUpRemovesItsStagingDocument) {
  Put("staged-giveup", "location", R"({"language": "python", "n": 0})");
  int edits = 0;
  options_.before_write = [&](const std::string& db, const std::string&) {
    rapidjson::Document theirs = Stored(db, "location");
    theirs["n"].SetInt(++edits);
    Put(db, "location", couchdb::ToJson(theirs));
  };
  v1::UploadRequest request = Request("staged-giveup", {File("design.yml", kLocationYaml)});
  request.set_staged(true);
  request.set_max_conflict_retries(1);
  UploadResult result = Upload(request);
  EXPECT_TRUE(absl::IsAborted(result.status)) << result.Dump();
  EXPECT_TRUE(Stored("staged-giveup", "location__staging").IsNull()) << result.Dump();
}

// A design document of its own under a staging name is neither overwritten by a staged build
// (it lost its validate_doc_update) nor deleted after it; nor may the YAML of a staged upload
// name one.
TEST_F(UploadIntegrationTest, ADesignDocumentOfItsOwnUnderAStagingNameIsLeftAlone) {
  Put("staged-own", "location__staging",
      R"({"language": "python", "validate_doc_update": "myviews.validate|21"})");
  v1::UploadRequest request = Request("staged-own", {File("design.yml", kLocationYaml)});
  request.set_staged(true);
  UploadResult result = Upload(request);
  EXPECT_TRUE(absl::IsFailedPrecondition(result.status)) << result.Dump();
  EXPECT_THAT(result.status.message(),
              HasSubstr("_design/location__staging in staged-own is a design document of its "
                        "own, not one a staged upload of _design/location left"));
  EXPECT_EQ(String(Stored("staged-own", "location__staging"), "/validate_doc_update"),
            "myviews.validate|21");
  EXPECT_TRUE(Stored("staged-own", "location").IsNull());

  // Views only, as a plain upload writes them, but not the views being staged: not a staging
  // document an earlier release left either.
  Put("staged-own", "other__staging",
      R"({"language": "python", "views": {"mine": {"map": "myviews.townmap|1"}}})");
  UploadResult views_only = Upload([&] {
    v1::UploadRequest r = Request(
        "staged-own", {File("other.yml", "other:\n    views:\n        towns: myviews.townmap\n")});
    r.set_staged(true);
    return r;
  }());
  EXPECT_TRUE(absl::IsFailedPrecondition(views_only.status)) << views_only.Dump();
  EXPECT_EQ(String(Stored("staged-own", "other__staging"), "/views/mine/map"), "myviews.townmap|1");

  v1::UploadRequest both = Request(
      "staged-own", {File("design.yml", absl::StrCat(kLocationYaml,
                                                     "location__staging:\n"
                                                     "    validate_doc_update: myviews.validate\n"))});
  both.set_staged(true);
  UploadResult refused = Upload(both);
  EXPECT_TRUE(absl::IsInvalidArgument(refused.status)) << refused.Dump();
  ASSERT_THAT(refused.errors(), SizeIs(1)) << refused.Dump();
  EXPECT_EQ(refused.errors()[0].location().line(), 6);
  const std::string kReserved =
      "design document \"location__staging\": names ending in \"__staging\" are cnp upload "
      "--staged's own (it builds NAME's index under NAME__staging and deletes that document "
      "after); rename it";
  EXPECT_EQ(refused.errors()[0].message(), kReserved);
  // Nor does a plain upload write one: a staged upload of location would take it for its own
  // staging document, write over it and delete it (a data-safety probe).
  both.set_staged(false);
  UploadResult plain = Upload(both);
  EXPECT_TRUE(absl::IsInvalidArgument(plain.status)) << plain.Dump();
  ASSERT_THAT(plain.errors(), SizeIs(1)) << plain.Dump();
  EXPECT_EQ(plain.errors()[0].message(), kReserved);
  EXPECT_EQ(String(Stored("staged-own", "location__staging"), "/validate_doc_update"),
            "myviews.validate|21");
}

TEST_F(UploadIntegrationTest, StopsWhenTheClientGoesAway) {
  Uploader uploader(runner_, options_);
  int events = 0;
  absl::Status status = uploader.Run(Request("cancel", {File("design.yml", kLocationYaml)}),
                                     [&](const v1::UploadEvent&) {
                                       ++events;
                                       return false;
                                     });
  EXPECT_TRUE(absl::IsCancelled(status)) << status;
  EXPECT_EQ(events, 1);
}

}  // namespace
}  // namespace cnp::upload::testing
