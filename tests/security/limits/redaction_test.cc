// Issue 7, item 4: no message shows a credential, even a password with an unencoded '/', '?',
// '#' or '@' that a URL parser would take for the start of the path.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/upload/upload_command.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "common/couchdb/couch_url.h"
#include "service/upload/uploader.h"
#include "tests/support/fake_blocking_task_runner.h"
#include "tests/upload/upload_events.h"

namespace cnp::upload::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(RedactCredentialsTest, TheIssuesExample) {
  EXPECT_EQ(couchdb::RedactCredentials("cannot reach CouchDB at http://admin:se/cret@db.example:5984: "
                              "Connection refused"),
            "cannot reach CouchDB at http://db.example:5984: Connection refused");
}

TEST(RedactCredentialsTest, EveryUnencodedSeparatorInThePassword) {
  for (const char* password : {"se/cret", "se?cret", "se#cret", "se@cret", "a/b?c#d@e:f",
                               "p%40ss"}) {
    const std::string text = absl::StrCat("at https://admin:", password, "@h:6984/x and more");
    EXPECT_EQ(couchdb::RedactCredentials(text), "at https://h:6984/x and more") << password;
  }
}

TEST(RedactCredentialsTest, EveryUrlInTheTextAndNothingElse) {
  EXPECT_EQ(couchdb::RedactCredentials("from http://u:p@a:1 to https://v:q/r@b:2/db (ok)"),
            "from http://a:1 to https://b:2/db (ok)");
  EXPECT_EQ(couchdb::RedactCredentials("no URL, mail me at someone@example.com"),
            "no URL, mail me at someone@example.com");
  EXPECT_EQ(couchdb::RedactCredentials("http://h:5984/db"), "http://h:5984/db");
  EXPECT_EQ(couchdb::RedactCredentials(""), "");
}

TEST(ParseCouchUrlTest, APasswordWithASlashIsAPasswordNotAPath) {
  absl::StatusOr<couchdb::CouchUrl> url = couchdb::ParseCouchUrl("http://admin:se/cret@localhost:5984");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(url->base, "http://localhost:5984");
  EXPECT_EQ(url->username, "admin");
  EXPECT_EQ(url->password, "se/cret");
  EXPECT_EQ(couchdb::RedactUrl("http://admin:se?cr#et@localhost:5984/db"), "http://localhost:5984/db");
}

// A loopback port nothing listens on.
int ClosedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

TEST(UploadRedactionTest, AnUnreachableCouchDBIsReportedWithoutThePassword) {
  ::cnp::testing::FakeBlockingTaskRunner runner;
  runner.Define("myviews.townmap", 1);
  Uploader uploader(runner);
  v1::UploadRequest request;
  request.set_couchdb_url(absl::StrCat("http://admin:se/cret@127.0.0.1:", ClosedPort()));
  request.set_database("db");
  *request.add_files() = File("design.yml", "location:\n  views:\n    towns: myviews.townmap\n");
  UploadResult result = RunUpload(uploader, request);
  EXPECT_TRUE(absl::IsUnavailable(result.status)) << result.status;
  EXPECT_THAT(result.status.message(), HasSubstr("cannot reach CouchDB at http://127.0.0.1:"));
  EXPECT_THAT(result.status.message(), Not(HasSubstr("cret")));
  for (const v1::UploadEvent& event : result.events) {
    EXPECT_THAT(event.ShortDebugString(), Not(HasSubstr("cret")));
  }
}

// An Upload service whose answer is scripted: the command must not print a password whatever
// the service says.
class ScriptedUploadService final : public v1::Functions::Service {
 public:
  using Handler = std::function<grpc::Status(const v1::UploadRequest&,
                                             grpc::ServerWriter<v1::UploadEvent>*)>;
  explicit ScriptedUploadService(Handler handler) : handler_(std::move(handler)) {}
  grpc::Status Upload(grpc::ServerContext*, const v1::UploadRequest* request,
                      grpc::ServerWriter<v1::UploadEvent>* writer) override {
    return handler_(*request, writer);
  }

 private:
  Handler handler_;
};

class CommandRedactionTest : public ::testing::Test {
 protected:
  void Serve(ScriptedUploadService::Handler handler) {
    char dir[] = "/tmp/cnp-redaction-test.XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    target_ = absl::StrCat("unix:", dir_, "/cnp.sock");
    service_ = std::make_unique<ScriptedUploadService>(std::move(handler));
    grpc::ServerBuilder builder;
    builder.AddListeningPort(target_, grpc::InsecureServerCredentials());
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Runs `cnp upload` and returns everything it printed.
  std::string Upload(const std::string& url, int& exit_code) {
    const std::string yaml = absl::StrCat(std::getenv("TEST_TMPDIR"), "/design.yml");
    std::ofstream(yaml) << "location:\n  views:\n    towns: myviews.townmap\n";
    std::ostringstream out, err;
    exit_code = client::upload::RunUpload(
        {"cnp upload", absl::StrCat("--target=", target_), url, "db", yaml},
        {.out = out, .err = err, .env = [](const char*) { return std::optional<std::string>(); }});
    return out.str() + err.str();
  }

  std::string dir_, target_;
  std::unique_ptr<ScriptedUploadService> service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(CommandRedactionTest, ThePasswordTravelsApartFromTheUrl) {
  v1::UploadRequest seen;
  Serve([&](const v1::UploadRequest& request, grpc::ServerWriter<v1::UploadEvent>*) {
    seen = request;
    return grpc::Status::OK;
  });
  int code = -1;
  std::string printed = Upload("http://admin:se/cret@127.0.0.1:5984", code);
  EXPECT_EQ(code, 0) << printed;
  EXPECT_EQ(seen.couchdb_url(), "http://127.0.0.1:5984");
  EXPECT_EQ(seen.credentials().username(), "admin");
  EXPECT_EQ(seen.credentials().password(), "se/cret");
}

TEST_F(CommandRedactionTest, WhatAServiceSaysIsPrintedWithoutCredentials) {
  // As an older service would answer, echoing a URL with the password in it.
  Serve([](const v1::UploadRequest&, grpc::ServerWriter<v1::UploadEvent>* writer) {
    v1::UploadEvent event;
    event.mutable_problem()->set_severity(v1::UploadProblem::ERROR);
    event.mutable_problem()->set_message("first: http://admin:se/cret@h:5984 failed");
    writer->Write(event);
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "cannot reach CouchDB at http://admin:se#cret@h:5984: refused");
  });
  int code = -1;
  std::string printed = Upload("http://127.0.0.1:5984", code);
  EXPECT_EQ(code, 1);
  EXPECT_THAT(printed, HasSubstr("first: http://h:5984 failed"));
  EXPECT_THAT(printed, HasSubstr("cannot reach CouchDB at http://h:5984: refused"));
  EXPECT_THAT(printed, Not(HasSubstr("cret")));
}

}  // namespace
}  // namespace cnp::upload::testing
