// cnp upload / cnp check end to end: the commands talk gRPC to an in-process Upload service
// (the Uploader with a fake worker pool), which talks HTTP to pouchdb-server.
#include "client/upload/upload_command.h"

#include "client/sync/sync_command.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "common/couchdb/couch_client.h"
#include "service/upload/uploader.h"
#include "tests/support/pouchdb_server.h"
#include "tests/support/fake_blocking_task_runner.h"

namespace cnp::client::upload {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPassword[] = "pw-never-shown-42";

// A cnp service that refuses every call, as one does a caller without the right token.
class RefusingService final : public v1::Functions::Service {
 public:
  grpc::Status Upload(grpc::ServerContext*, const v1::UploadRequest*,
                      grpc::ServerWriter<v1::UploadEvent>*) override {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the bearer token was refused (check --auth-token-file)");
  }
};

class UploadOnlyService final : public v1::Functions::Service {
 public:
  explicit UploadOnlyService(cnp::upload::Uploader& uploader) : uploader_(uploader) {}

  grpc::Status Upload(grpc::ServerContext*, const v1::UploadRequest* request,
                      grpc::ServerWriter<v1::UploadEvent>* writer) override {
    absl::Status status = uploader_.Run(
        *request, [&](const v1::UploadEvent& event) { return writer->Write(event); });
    return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                        std::string(status.message()));
  }

 private:
  cnp::upload::Uploader& uploader_;
};

struct CommandRun {
  int exit_code;
  std::string out, err;
};

class UploadCommandTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto started = cnp::testing::PouchDbServer::Start();
    ASSERT_TRUE(started.ok()) << started.status();
    couch_ = started->release();
    cnp::couchdb::CouchClient anonymous({.base_url = couch_->url()});
    for (const char* db : {"cli", "cli-env", "cli-netrc", "cli-registry", "cli-acct-1",
                           "cli-registry-nomatch"}) {
      ASSERT_EQ(anonymous.Put(cnp::couchdb::DatabasePath(db), "")->status, 201);
    }
    ASSERT_EQ(anonymous.Put("/_config/admins/admin", absl::StrCat("\"", kPassword, "\""))->status,
              200);

    runner_ = new cnp::testing::FakeBlockingTaskRunner();
    runner_->Define("myviews.townmap", 123);
    runner_->Define("myviews.validate", 21);
    uploader_ = new cnp::upload::Uploader(*runner_);
    service_ = new UploadOnlyService(*uploader_);
    // TEST_TMPDIR is too long for a unix socket path (108 bytes).
    char dir[] = "/tmp/cnp-upload-test.XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    socket_dir_ = dir;
    target_ = absl::StrCat("unix:", socket_dir_, "/cnp.sock");
    grpc::ServerBuilder builder;
    builder.AddListeningPort(target_, grpc::InsecureServerCredentials());
    builder.RegisterService(service_);
    server_ = builder.BuildAndStart().release();
    ASSERT_NE(server_, nullptr);
  }

  static void TearDownTestSuite() {
    server_->Shutdown();
    delete server_;
    delete service_;
    delete uploader_;
    delete runner_;
    delete couch_;
    std::filesystem::remove_all(socket_dir_);
  }

  static std::string WriteFile(const std::string& name, const std::string& text) {
    std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
    std::ofstream(path) << text;
    return path;
  }

  static std::string DesignYaml() {
    return WriteFile("design.yml",
                     "location:\n"
                     "    views:\n"
                     "        towns:\n"
                     "            map: myviews.townmap\n"
                     "    validate_doc_update: myviews.validate\n");
  }

  std::string UrlWithPassword() const {
    return absl::StrCat("http://admin:", kPassword, "@127.0.0.1:", couch_->port());
  }

  CommandRun Upload(std::vector<std::string> args) { return Invoke(&RunUpload, "cnp upload", args); }
  CommandRun Check(std::vector<std::string> args) { return Invoke(&RunCheck, "cnp check", args); }
  CommandRun Sync(std::vector<std::string> args) {
    return Invoke(&cnp::client::sync::RunSync, "cnp sync", args);
  }

  CommandRun Invoke(int (*command)(const std::vector<std::string>&, CommandIo), const char* name,
             std::vector<std::string> args) {
    args.insert(args.begin(), name);
    std::ostringstream out, err;
    std::map<std::string, std::string> env = env_;
    int code = command(args, {.out = out, .err = err,
                              .env = [env](const char* var) -> std::optional<std::string> {
                                auto it = env.find(var);
                                if (it == env.end()) return std::nullopt;
                                return it->second;
                              }});
    CommandRun run{code, out.str(), err.str()};
    EXPECT_THAT(run.out, Not(HasSubstr(kPassword)));
    EXPECT_THAT(run.err, Not(HasSubstr(kPassword)));
    return run;
  }

  static cnp::testing::PouchDbServer* couch_;
  static cnp::testing::FakeBlockingTaskRunner* runner_;
  static cnp::upload::Uploader* uploader_;
  static UploadOnlyService* service_;
  static grpc::Server* server_;
  static std::string target_;
  static std::string socket_dir_;
  std::map<std::string, std::string> env_ = {{"HOME", "/nonexistent"}};
};

cnp::testing::PouchDbServer* UploadCommandTest::couch_ = nullptr;
cnp::testing::FakeBlockingTaskRunner* UploadCommandTest::runner_ = nullptr;
cnp::upload::Uploader* UploadCommandTest::uploader_ = nullptr;
UploadOnlyService* UploadCommandTest::service_ = nullptr;
grpc::Server* UploadCommandTest::server_ = nullptr;
std::string UploadCommandTest::target_;
std::string UploadCommandTest::socket_dir_;

TEST_F(UploadCommandTest, HelpDescribesTheCommands) {
  CommandRun upload = Upload({"--help"});
  EXPECT_EQ(upload.exit_code, 0);
  EXPECT_THAT(upload.out, HasSubstr("Usage: cnp upload [options] COUCHDB_URL DATABASE FILE.yml"));
  for (const char* flag : {"--dry-run", "--staged", "--drop-unknown-fields", "--view-server",
                           "--ca-file", "--target", "CNP_COUCHDB_USER", ".netrc"}) {
    EXPECT_THAT(upload.out, HasSubstr(flag));
  }
  CommandRun check = Check({"-h"});
  EXPECT_EQ(check.exit_code, 0);
  EXPECT_THAT(check.out, HasSubstr("Usage: cnp check [options] FILE.yml"));
}

TEST_F(UploadCommandTest, UsageErrorsExitWithTwo) {
  EXPECT_EQ(Upload({}).exit_code, 2);
  EXPECT_EQ(Upload({"http://localhost:5984", "db"}).exit_code, 2);
  CommandRun unknown = Upload({"--force", "http://localhost:5984", "db", "a.yml"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_THAT(unknown.err, HasSubstr("unknown option --force"));
  EXPECT_EQ(Check({"--staged", "a.yml"}).exit_code, 2);  // upload-only
  EXPECT_EQ(Check({}).exit_code, 2);
  // An unset shell variable: a usage error, before any file is read (it was exit 1, a design
  // document without a database, a review found).
  CommandRun empty = Upload({"http://localhost:5984", "", "a.yml"});
  EXPECT_EQ(empty.exit_code, 2);
  EXPECT_THAT(empty.err, HasSubstr("DATABASE is empty"));
}

// cnp upload and cnp sync read their options the same way: numbers checked, -h for --help, the
// same CA file rules.
TEST_F(UploadCommandTest, UploadAndSyncShareTheirOptionRules) {
  for (CommandRun run : {Upload({"--max-conflict-retries=0", "http://h:5984", "db", "a.yml"}),
                         Sync({"--max-conflict-retries=lots", "http://h:5984", "reg"})}) {
    EXPECT_EQ(run.exit_code, 2);
    EXPECT_THAT(run.err, HasSubstr("--max-conflict-retries needs a number of at least 1"));
  }
  CommandRun flag_with_value = Sync({"--once=yes", "http://h:5984", "reg"});
  EXPECT_EQ(flag_with_value.exit_code, 2);
  EXPECT_THAT(flag_with_value.err, HasSubstr("--once takes no value"));
  CommandRun help = Sync({"-h"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("Usage: cnp sync [options] COUCHDB_URL REGISTRY_DB"));
  std::string not_pem = WriteFile("sync-not-a-cert.pem", "hello\n");
  CommandRun bad_ca = Sync({"--once", "--ca-file", not_pem, "https://localhost:6984", "reg"});
  EXPECT_EQ(bad_ca.exit_code, 2);
  EXPECT_THAT(bad_ca.err, HasSubstr("holds no PEM certificate"));
}

// The CA file is read by the command and its text sent: the service never opens a path a
// caller names, so a file that is not a certificate is refused here, before any call.
TEST_F(UploadCommandTest, TheCaFileIsReadHereAndMustHoldACertificate) {
  std::string not_pem = WriteFile("not-a-cert.pem", "root:x:0:0:root:/root:/bin/bash\n");
  CommandRun bad = Upload({"--target", target_, "--ca-file", not_pem, "https://localhost:6984",
                           "db", DesignYaml()});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("holds no PEM certificate"));
  CommandRun missing = Upload({"--target", target_, "--ca-file", "/nonexistent/ca.pem",
                               "https://localhost:6984", "db", DesignYaml()});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("--ca-file: cannot read /nonexistent/ca.pem"));
}

TEST_F(UploadCommandTest, UploadsThenReportsUnchanged) {
  std::string file = DesignYaml();
  CommandRun first = Upload({"--target", target_, UrlWithPassword(), "cli", file});
  EXPECT_EQ(first.exit_code, 0) << first.err;
  EXPECT_THAT(first.out, HasSubstr(absl::StrCat(file, ":1:1: created cli/_design/location (rev 1-")));
  EXPECT_THAT(first.out, HasSubstr("index: built on the first query of any view: towns"));

  CommandRun second = Upload({"--target=" + target_, UrlWithPassword(), "cli", file});
  EXPECT_EQ(second.exit_code, 0) << second.err;
  EXPECT_THAT(second.out, HasSubstr("unchanged cli/_design/location"));
  EXPECT_THAT(second.out, HasSubstr("1 unchanged"));

  runner_->Define("myviews.townmap", 124);
  CommandRun dry = Upload({"--target=" + target_, "--dry-run", UrlWithPassword(), "cli", file});
  runner_->Define("myviews.townmap", 123);
  EXPECT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_THAT(dry.out, HasSubstr("would update cli/_design/location"));
  EXPECT_THAT(dry.out,
              HasSubstr("~ views.towns.map: \"myviews.townmap|123\" -> \"myviews.townmap|124\""));
  EXPECT_THAT(dry.out, HasSubstr("index: rebuilt on the next query of any view: towns"));

  // With --staged the index would be built before the write, not on the next query.
  runner_->Define("myviews.townmap", 124);
  CommandRun staged = Upload(
      {"--target=" + target_, "--dry-run", "--staged", UrlWithPassword(), "cli", file});
  runner_->Define("myviews.townmap", 123);
  EXPECT_EQ(staged.exit_code, 0) << staged.err;
  EXPECT_THAT(staged.out, HasSubstr("would update cli/_design/location"));
  EXPECT_THAT(staged.out, HasSubstr("index: would be built before the write, under "
                                    "_design/location__staging: towns"));
  EXPECT_THAT(staged.out, Not(HasSubstr("on the next query")));
}

// The two halves of cnp sync through the commands: register (versions resolved by the
// service), then one sync pass that puts the design document where its classification says.
TEST_F(UploadCommandTest, RegisterThenSyncPutsTheDesignDocumentInPlace) {
  std::string file = WriteFile("registered.yml",
                               "classifications:\n"
                               "  account: \"cli-acct-*\"\n"
                               "location:\n"
                               "  classification: account\n"
                               "  views:\n"
                               "    towns: myviews.townmap\n");
  CommandRun registered =
      Upload({"--target", target_, "--register", "cli-registry", UrlWithPassword(), file});
  EXPECT_EQ(registered.exit_code, 0) << registered.err;
  EXPECT_THAT(registered.out,
              HasSubstr("created cli-registry/location@classification:account (rev 1-"));

  CommandRun synced = Sync({"--once", UrlWithPassword(), "cli-registry"});
  EXPECT_EQ(synced.exit_code, 0) << synced.err;
  EXPECT_THAT(synced.out, HasSubstr("created cli-acct-1/_design/location (rev 1-"));
  cnp::couchdb::CouchClient admin(
      {.base_url = couch_->url(), .username = "admin", .password = kPassword});
  EXPECT_THAT(admin.Get("/cli-acct-1/_design/location")->body,
              HasSubstr("\"myviews.townmap|123\""));

  CommandRun staged = Upload({"--target", target_, "--register", "cli-registry", "--staged",
                              UrlWithPassword(), file});
  EXPECT_EQ(staged.exit_code, 2);
  EXPECT_THAT(staged.err, HasSubstr("--staged and --register do not go together"));
}

TEST_F(UploadCommandTest, CredentialsFromTheEnvironmentAndAWrongPassword) {
  std::string file = DesignYaml();
  std::string url = absl::StrCat("http://127.0.0.1:", couch_->port());
  env_["CNP_COUCHDB_USER"] = "admin";
  env_["CNP_COUCHDB_PASSWORD"] = kPassword;
  CommandRun ok = Upload({"--target=" + target_, url, "cli-env", file});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("created cli-env/_design/location"));

  env_["CNP_COUCHDB_PASSWORD"] = "not-the-password";
  CommandRun refused = Upload({"--target=" + target_, url, "cli-env", file});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("refused the credentials"));
  EXPECT_THAT(refused.err + refused.out, Not(HasSubstr("not-the-password")));

  // No password at all is not a wrong one: said before anything is sent, for sync alike.
  env_.erase("CNP_COUCHDB_PASSWORD");
  for (CommandRun unset : {Upload({"--target=" + target_, url, "cli-env", file}),
                           Sync({"--once", url, "cli-registry"})}) {
    EXPECT_EQ(unset.exit_code, 2) << unset.err;
    EXPECT_THAT(unset.err, HasSubstr("CNP_COUCHDB_PASSWORD is not set"));
    EXPECT_THAT(unset.err, Not(HasSubstr("refused the credentials")));
    EXPECT_EQ(unset.out, "");
  }
}

TEST_F(UploadCommandTest, CredentialsFromNetrc) {
  std::string netrc = WriteFile(
      "netrc", absl::StrCat("machine 127.0.0.1 login admin password ", kPassword, "\n"));
  env_["NETRC"] = netrc;
  CommandRun run = Upload({"--target=" + target_, absl::StrCat("http://127.0.0.1:", couch_->port()),
                    "cli-netrc", DesignYaml()});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("created cli-netrc/_design/location"));
}

TEST_F(UploadCommandTest, MissingDatabaseAndDownCouchDbFail) {
  CommandRun missing = Upload({"--target=" + target_, UrlWithPassword(), "absent", DesignYaml()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("database \"absent\" does not exist"));

  // A database's URL given as CouchDB's: "cli" exists, and the message says so and what to pass
  // (it said that "cli" does not exist and to create it).
  CommandRun database_url =
      Upload({"--target=" + target_, UrlWithPassword() + "/cli", "cli", DesignYaml()});
  EXPECT_EQ(database_url.exit_code, 1);
  EXPECT_THAT(database_url.err, HasSubstr("/cli is the URL of the database cli, not CouchDB's root; "
                                          "pass CouchDB's root URL (here probably http://"));
  EXPECT_THAT(database_url.err, Not(HasSubstr("does not exist")));

  std::string down = absl::StrCat("http://admin:", kPassword, "@127.0.0.1:",
                                  cnp::testing::UnusedLoopbackPort());
  CommandRun unreachable = Upload({"--target=" + target_, down, "cli", DesignYaml()});
  EXPECT_EQ(unreachable.exit_code, 1);
  EXPECT_THAT(unreachable.err, HasSubstr("cannot reach CouchDB at http://127.0.0.1:"));
}

TEST_F(UploadCommandTest, CheckPrintsDocumentsOrProblemsWithFileAndLine) {
  CommandRun good = Check({"--target=" + target_, DesignYaml()});
  EXPECT_EQ(good.exit_code, 0) << good.err;
  EXPECT_THAT(good.out, HasSubstr("ok _design/location"));
  EXPECT_THAT(good.out, HasSubstr("\"map\":\"myviews.townmap|123\""));

  std::string bad = WriteFile("bad.yml", "location:\n  colour: red\n  views: {t: nowhere.fn}\n");
  CommandRun problems = Check({"--target=" + target_, bad});
  EXPECT_EQ(problems.exit_code, 1);
  EXPECT_THAT(problems.err, HasSubstr(absl::StrCat(bad, ":2:3: warning: unknown key \"colour\"")));
  EXPECT_THAT(problems.err, HasSubstr(absl::StrCat(bad, ":3:14: error: \"nowhere.fn\" cannot be used")));
  EXPECT_THAT(problems.err, HasSubstr("cnp check: 1 error in the design documents\n"));

  // Bad input, exit status 2 as for every cnp command (it was 1 here, 2 for cnp map).
  CommandRun unreadable = Check({"--target=" + target_, "/nonexistent/x.yml"});
  EXPECT_EQ(unreadable.exit_code, 2);
  EXPECT_THAT(unreadable.err, HasSubstr("cannot read /nonexistent/x.yml"));
}

// A design document in one of CouchDB's own languages never reaches cnp's query server:
// CouchDB would compile "myviews.townmap|123" as JavaScript (or Erlang), its views would fail
// and a validate_doc_update would refuse every write. check and upload (dry run or not, in
// place or --register) said ok or `would update ... language: "python" -> "javascript"`
// (found by a review). The flag is a usage error naming it; the YAML key an error at its line.
TEST_F(UploadCommandTest, CouchDbsOwnLanguagesAreRefusedAsFlagAndAsYaml) {
  const std::string file = DesignYaml();
  for (const char* language : {"javascript", "erlang", "query", "JavaScript"}) {
    const std::string flag = absl::StrCat("--view-server=", language);
    for (CommandRun run :
         {Check({"--target=" + target_, flag, file}),
          Upload({"--target=" + target_, "--dry-run", flag, UrlWithPassword(), "cli", file}),
          Upload({"--target=" + target_, "--register", "cli-registry", flag, UrlWithPassword(),
                  file})}) {
      EXPECT_EQ(run.exit_code, 2) << flag << run.out << run.err;
      EXPECT_THAT(run.err, HasSubstr(absl::StrCat(flag, " is CouchDB's own"))) << flag;
      EXPECT_THAT(run.out, Not(HasSubstr("location"))) << flag;
    }
  }

  const std::string javascript = WriteFile("javascript.yml",
                                           "location:\n"
                                           "  language: javascript\n"
                                           "  validate_doc_update: myviews.validate\n");
  for (CommandRun run :
       {Check({"--target=" + target_, javascript}),
        Upload({"--target=" + target_, "--dry-run", UrlWithPassword(), "cli", javascript}),
        Upload({"--target=" + target_, "--register", "cli-registry", UrlWithPassword(),
                javascript})}) {
    EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
    EXPECT_THAT(run.err, HasSubstr(absl::StrCat(
                             javascript, ":2:13: error: language \"javascript\" is CouchDB's own "
                                         "JavaScript")));
    EXPECT_THAT(run.out, Not(HasSubstr("would update")));
    EXPECT_THAT(run.out, Not(HasSubstr("ok _design/location")));
  }

  // Another name is the operator's for cnp's query server (COUCHDB_QUERY_SERVER_CNP).
  CommandRun custom = Check({"--target=" + target_, "--view-server=cnp", file});
  EXPECT_EQ(custom.exit_code, 0) << custom.err;
  EXPECT_THAT(custom.out, HasSubstr("\"language\":\"cnp\""));
}

// A target that matches no database is a warning in both commands, and neither exits with an
// error for it: `cnp upload` names the pattern at its file:line; `cnp sync` names each registry
// entry and counts them in its summary, instead of a bare "no design documents" that reads
// like success.
TEST_F(UploadCommandTest, ATargetThatMatchesNoDatabaseIsAWarningInUploadAndSyncAlike) {
  std::string file = WriteFile("nomatch.yml",
                               "classifications:\n"
                               "  acct: \"cli-nosuch-*\"\n"
                               "towns:\n"
                               "  classification: acct\n"
                               "  views: {by_town: myviews.townmap}\n"
                               "config:\n"
                               "  databases: [cli-nosuchdb]\n"
                               "  validate_doc_update: myviews.validate\n");
  std::string patterns = WriteFile("nomatch-pattern.yml",
                                   "towns:\n"
                                   "  databases: [\"cli-nosuch-*\"]\n"
                                   "  views: {by_town: myviews.townmap}\n");
  CommandRun upload = Upload({"--target", target_, UrlWithPassword(), "cli", patterns});
  EXPECT_EQ(upload.exit_code, 0) << upload.err;
  EXPECT_THAT(upload.err, HasSubstr(absl::StrCat(patterns, ":2:")));
  EXPECT_THAT(upload.err, HasSubstr("warning: \"cli-nosuch-*\" matches no database"));
  EXPECT_THAT(upload.out, HasSubstr("nothing written, 1 warning\n"));  // not just the count

  CommandRun registered =
      Upload({"--target", target_, "--register", "cli-registry-nomatch", UrlWithPassword(), file});
  ASSERT_EQ(registered.exit_code, 0) << registered.err;
  CommandRun synced = Sync({"--once", UrlWithPassword(), "cli-registry-nomatch"});
  EXPECT_EQ(synced.exit_code, upload.exit_code) << synced.err;
  // Marked as the README says a warning about the registry is (found by a probe: unmarked).
  EXPECT_THAT(synced.err, HasSubstr("warning: [cli-registry-nomatch] registry entry "
                                    "\"towns@classification:acct\" "
                                    "matches no database (\"cli-nosuch-*\"): _design/towns was "
                                    "written nowhere for it"));
  EXPECT_THAT(synced.err, HasSubstr("warning: [cli-registry-nomatch] registry entry "
                                    "\"config@database:cli-nosuchdb\" "
                                    "matches no database (\"cli-nosuchdb\")"));
  EXPECT_THAT(synced.out, HasSubstr("2 registered design documents matched no database, "
                                    "2 warnings\n"));
  EXPECT_THAT(synced.out, Not(HasSubstr("no design documents")));
  for (const CommandRun& help : {Upload({"--help"}), Sync({"--help"})}) {
    EXPECT_THAT(help.out, HasSubstr("matches no database"));
    EXPECT_THAT(help.out, HasSubstr("warnings do not change it"));
  }
}

// Files that hold no design document fail both commands: the error names the file on stderr
// and the exit status is 1, so a script that checks only the status does not pass having
// uploaded nothing.
TEST_F(UploadCommandTest, FilesWithoutDesignDocumentsFailBothCommands) {
  std::string comments = WriteFile("comments-only.yml", "# location:\n#   views: {}\n");
  for (const CommandRun& run :
       {Upload({"--target=" + target_, UrlWithPassword(), "cli", comments}),
        Check({"--target=" + target_, comments})}) {
    EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
    EXPECT_THAT(run.err, HasSubstr("error: " + comments + " holds no design document"));
    EXPECT_THAT(run.out, Not(HasSubstr("created")));
  }
}

// A call the service refused reached no design document: the advice is printed, and no
// summary claims an outcome ("no design documents") it never got to.
TEST_F(UploadCommandTest, ARefusedCallClaimsNoOutcome) {
  RefusingService refusing;
  const std::string target = absl::StrCat("unix:", socket_dir_, "/refusing.sock");
  grpc::ServerBuilder builder;
  builder.AddListeningPort(target, grpc::InsecureServerCredentials());
  builder.RegisterService(&refusing);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  for (const CommandRun& run : {Upload({"--target=" + target, UrlWithPassword(), "cli", DesignYaml()}),
                                Check({"--target=" + target, DesignYaml()})}) {
    EXPECT_EQ(run.exit_code, 1);
    EXPECT_THAT(run.err, HasSubstr("the bearer token was refused"));
    EXPECT_THAT(run.out, Not(HasSubstr("no design documents")));
    EXPECT_EQ(run.out, "");
  }
  server->Shutdown();
}

TEST_F(UploadCommandTest, AServiceThatIsDownIsExplained) {
  std::string nowhere = absl::StrCat("unix:", socket_dir_, "/nobody.sock");
  CommandRun run = Upload({"--target=" + nowhere, UrlWithPassword(), "cli", DesignYaml()});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("no cnp-server answers at " + nowhere));
  EXPECT_THAT(run.err, HasSubstr("cnp-server --listen="));
}

}  // namespace
}  // namespace cnp::client::upload
