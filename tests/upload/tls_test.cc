// HTTPS to CouchDB: a server whose certificate the CA file vouches for is reached; without the
// CA file the same server is refused. openssl s_server stands in for CouchDB: it answers every
// GET with a status page, so a run that got through TLS ends at GET / answering HTTP 200 without
// CouchDB's welcome.
#include <fstream>
#include <iterator>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/upload/uploader.h"
#include "tests/support/child_process.h"
#include "tests/support/pouchdb_server.h"
#include "tests/support/fake_blocking_task_runner.h"
#include "tests/upload/upload_events.h"

namespace cnp::upload::testing {

using ::cnp::testing::ChildProcess;
using ::cnp::testing::MakeTempDir;
using ::cnp::testing::RunToCompletion;
using ::cnp::testing::UnusedLoopbackPort;

namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

TEST(TlsTest, TheCaFileDecidesWhetherTheServerIsTrusted) {
  std::string dir = MakeTempDir("tls");
  ASSERT_FALSE(dir.empty());
  ASSERT_EQ(RunToCompletion({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                             "-keyout", "key.pem", "-out", "cert.pem", "-days", "1", "-subj",
                             "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"},
                            dir),
            0);
  int port = UnusedLoopbackPort();
  absl::StatusOr<std::unique_ptr<ChildProcess>> server = ChildProcess::Start(
      {"openssl", "s_server", "-accept", absl::StrCat("127.0.0.1:", port), "-cert", "cert.pem",
       "-key", "key.pem", "-www"},
      dir, "ACCEPT", absl::Seconds(30));
  ASSERT_TRUE(server.ok()) << server.status();

  ::cnp::testing::FakeBlockingTaskRunner runner;
  runner.Define("m.map", 1);
  Uploader uploader(runner);
  v1::UploadRequest request;
  request.set_couchdb_url(absl::StrCat("https://127.0.0.1:", port));
  request.set_database("db");
  *request.add_files() = File("d.yml", "d:\n  views: {v: m.map}\n");

  UploadResult untrusted = RunUpload(uploader, request);
  EXPECT_TRUE(absl::IsUnavailable(untrusted.status)) << untrusted.status;
  ASSERT_THAT(untrusted.errors(), SizeIs(1));
  EXPECT_THAT(untrusted.errors()[0].message(), HasSubstr("certificate"));

  std::ifstream pem(absl::StrCat(dir, "/cert.pem"));
  request.set_ca_pem(std::string(std::istreambuf_iterator<char>(pem), {}));
  UploadResult trusted = RunUpload(uploader, request);
  ASSERT_THAT(trusted.errors(), SizeIs(1)) << trusted.Dump();
  EXPECT_THAT(trusted.errors()[0].message(), Not(HasSubstr("certificate")));
  EXPECT_THAT(trusted.errors()[0].message(),
              HasSubstr(absl::StrCat("is not CouchDB's root: GET https://127.0.0.1:", port,
                                     "/ answered HTTP 200 without CouchDB's welcome")));
}

}  // namespace
}  // namespace cnp::upload::testing
