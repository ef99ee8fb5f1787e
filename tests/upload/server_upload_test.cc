// cnp upload / cnp check against the real cnp-server binary (real workers importing
// tests/upload/pyfns) and pouchdb-server: the whole path a user takes.
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "client/upload/upload_command.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/couchdb/couch_client.h"
#include "tests/support/pouchdb_server.h"
#include "tests/support/server_process.h"

namespace cnp::upload::testing {

using ::cnp::testing::PouchDbServer;

namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPassword[] = "pw-for-the-real-server";

struct CommandRun {
  int exit_code;
  std::string out, err;
};

class ServerUploadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = cnp::testing::ServerProcess::Start(
        {"--python-path=" + cnp::testing::Runfile("tests/upload/pyfns"), "--workers=1"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    auto couch = PouchDbServer::Start();
    ASSERT_TRUE(couch.ok()) << couch.status();
    couch_ = std::move(*couch);
    couchdb::CouchClient anonymous({.base_url = couch_->url()});
    ASSERT_EQ(anonymous.Put("/towns", "")->status, 201);
    ASSERT_EQ(anonymous.Put("/_config/admins/admin", absl::StrCat("\"", kPassword, "\""))->status,
              200);
    yaml_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/design.yml");
    std::ofstream(yaml_) << "location:\n"
                            "    views:\n"
                            "        towns:\n"
                            "            map: uploadfns.townmap\n"
                            "    validate_doc_update: uploadfns.validate\n";
  }

  CommandRun Run(int (*command)(const std::vector<std::string>&, cnp::client::upload::CommandIo),
                 std::vector<std::string> args) {
    std::ostringstream out, err;
    int code = command(args, {.out = out, .err = err});
    CommandRun run{code, out.str(), err.str()};
    EXPECT_THAT(run.out + run.err, Not(HasSubstr(kPassword)));
    return run;
  }

  std::unique_ptr<cnp::testing::ServerProcess> server_;
  std::unique_ptr<PouchDbServer> couch_;
  std::string yaml_;
};

TEST_F(ServerUploadTest, UploadsWithVersionsFromTheWorkersThenLeavesAlone) {
  std::string url = absl::StrCat("http://admin:", kPassword, "@127.0.0.1:", couch_->port());
  std::vector<std::string> args = {"cnp upload", "--target=" + server_->target(), url, "towns",
                                   yaml_};
  CommandRun first = Run(&cnp::client::upload::RunUpload, args);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  EXPECT_THAT(first.out, HasSubstr("created towns/_design/location"));

  couchdb::CouchClient admin({.base_url = couch_->url(), .username = "admin", .password = kPassword});
  absl::StatusOr<couchdb::HttpResponse> stored = admin.Get("/towns/_design/location");
  ASSERT_TRUE(stored.ok());
  EXPECT_THAT(stored->body, HasSubstr("\"uploadfns.townmap|123\""));
  EXPECT_THAT(stored->body, HasSubstr("\"uploadfns.validate|21\""));

  CommandRun second = Run(&cnp::client::upload::RunUpload, args);
  EXPECT_EQ(second.exit_code, 0) << second.err;
  EXPECT_THAT(second.out, HasSubstr("unchanged towns/_design/location"));

  // A failing run too, then the service's own log: no password anywhere.
  std::string wrong = absl::StrCat("http://admin:", kPassword, "-typo@127.0.0.1:", couch_->port());
  CommandRun refused = Run(&cnp::client::upload::RunUpload,
                           {"cnp upload", "--target=" + server_->target(), wrong, "towns", yaml_});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("refused the credentials"));
  EXPECT_THAT(server_->Log(), Not(HasSubstr(kPassword)));
}

TEST_F(ServerUploadTest, CheckReportsTheWorkersImportErrorsAtTheirLines) {
  std::string bad = absl::StrCat(std::getenv("TEST_TMPDIR"), "/bad.yml");
  std::ofstream(bad) << "d:\n  views:\n    a: uploadfns_broken.fn\n    b: uploadfns.townmap\n";
  CommandRun run =
      Run(&cnp::client::upload::RunCheck, {"cnp check", "--target=" + server_->target(), bad});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr(absl::StrCat(bad, ":3:8: error: \"uploadfns_broken.fn\"")));
  EXPECT_THAT(run.err, HasSubstr("broken on purpose"));
}

}  // namespace
}  // namespace cnp::upload::testing
