// The clients take the server's security options: cnp (--tls-ca, --tls-cert, --tls-key,
// --auth-token-file) and cnp-adapter (the same flags), against a server that requires mutual
// TLS and a token; a client without the token is told so at once. Both refuse a unix socket
// in a directory others may write to, and to send a token or CouchDB's password in plaintext
// off this host.
#include <sys/stat.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/security/transport/transport_testing.h"
#include "tests/support/server_process.h"

namespace cnp::security_testing {
namespace {

using ::cnp::testing::Runfile;
using ::testing::AllOf;
using ::testing::HasSubstr;

class SecuredServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Certificates> certs = MakeCertificates();
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *certs;
    token_file_ = certs_.dir + "/token";
    WriteFile(token_file_, "adapter-token-42\n");
    server_ = LaunchServer({.args = {"--listen=127.0.0.1:0",
                                              "--tls-cert=" + certs_.server_cert,
                                              "--tls-key=" + certs_.server_key,
                                              "--tls-client-ca=" + certs_.ca,
                                              "--auth-token-file=" + token_file_}});
    ASSERT_TRUE(server_->ready()) << server_->Log();
    target_ = absl::StrCat("127.0.0.1:", server_->Port());
  }

  std::vector<std::string> Security(bool with_token) const {
    std::vector<std::string> flags = {"--tls-ca=" + certs_.ca, "--tls-cert=" + certs_.client_cert,
                                      "--tls-key=" + certs_.client_key};
    if (with_token) flags.push_back("--auth-token-file=" + token_file_);
    return flags;
  }

  Certificates certs_;
  std::string token_file_;
  std::unique_ptr<ServerProcess> server_;
  std::string target_;
};

TEST_F(SecuredServerTest, TheCliTakesTheSameOptions) {
  std::vector<std::string> argv = {Runfile("client/cli/cnp"), "map", "--target=" + target_};
  for (const std::string& flag : Security(true)) argv.push_back(flag);
  argv.push_back("svc_fns.doubled");
  ProcessResult ok = RunWithInput(argv, R"({"_id":"a","n":21})");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr(R"([["a",42]])"));

  argv = {Runfile("client/cli/cnp"), "map", "--target=" + target_};
  for (const std::string& flag : Security(false)) argv.push_back(flag);
  argv.push_back("svc_fns.doubled");
  ProcessResult no_token = RunWithInput(argv, R"({"_id":"a","n":21})");
  EXPECT_EQ(no_token.exit_code, 1);
  EXPECT_THAT(no_token.err, HasSubstr("requires a bearer token"));

  ProcessResult check = RunWithInput(
      {Runfile("client/cli/cnp"), "check", "--target=" + target_, "--tls-ca=" + certs_.ca,
       "--tls-cert=" + certs_.client_cert, "--tls-key=" + certs_.client_key,
       "--auth-token-file=" + token_file_, "/no/such.yml"},
      "");
  EXPECT_THAT(check.out + check.err, HasSubstr("/no/such.yml"));
  EXPECT_THAT(check.out + check.err, ::testing::Not(HasSubstr("bearer token")));
}

TEST_F(SecuredServerTest, TheAdapterServesCouchDbOverMutualTlsWithAToken) {
  std::vector<std::string> argv = {Runfile("adapter/cnp-adapter"), "--target=" + target_};
  for (const std::string& flag : Security(true)) argv.push_back(flag);
  ProcessResult run = RunWithInput(argv,
                                   "[\"reset\"]\n[\"add_fun\",\"svc_fns.doubled\"]\n"
                                   "[\"map_doc\",{\"_id\":\"a\",\"n\":21}]\n");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "true\ntrue\n[\"log\",\"doubling a\"]\n[[[\"a\",42]]]\n") << run.err;
}

TEST_F(SecuredServerTest, AnAdapterWithoutTheTokenIsToldAtOnce) {
  std::vector<std::string> argv = {Runfile("adapter/cnp-adapter"), "--target=" + target_};
  for (const std::string& flag : Security(false)) argv.push_back(flag);
  const absl::Time started = absl::Now();
  ProcessResult run = RunWithInput(argv, "[\"add_fun\",\"svc_fns.doubled\"]\n");
  // Not retried until CouchDB's timeout (5 s by default): the answer will not change.
  EXPECT_LT(absl::Now() - started, absl::Seconds(3));
  EXPECT_THAT(run.out, HasSubstr("\"unavailable\""));
  EXPECT_THAT(run.out, HasSubstr("requires a bearer token"));
}

TEST(SocketDirectoryTest, ClientsRefuseASocketInADirectoryOthersMayWrite) {
  const std::string dir = ShortTempDir();
  ASSERT_EQ(::chmod(dir.c_str(), 0777), 0);
  ProcessResult adapter = RunWithInput(
      {Runfile("adapter/cnp-adapter"), "--target=unix:" + dir + "/cnp.sock"},
      "[\"add_fun\",\"svc_fns.doubled\"]\n");
  EXPECT_THAT(adapter.out, HasSubstr("has mode 0777"));
  // CouchDB's pipes are never offered to a session socket there either.
  ProcessResult direct = RunWithInput({Runfile("adapter/cnp-adapter"), "--session=direct",
                                       "--target=unix:" + dir + "/cnp.sock"},
                                      "[\"reset\"]\n");
  EXPECT_EQ(direct.exit_code, 1);
  EXPECT_THAT(direct.err, HasSubstr("has mode 0777"));
  ProcessResult cli = RunWithInput(
      {Runfile("client/cli/cnp"), "map", "--target=unix:" + dir + "/cnp.sock", "svc_fns.doubled"},
      R"({"_id":"a"})");
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_THAT(cli.err, HasSubstr("has mode 0777"));
}

// Nor the documents, unless told: cnp and cnp-adapter refuse a plaintext target off this host
// before they read their input (adapter review finding: it was the default), and take it with
// --insecure, as cnp-server takes such a listener.
TEST(PlaintextSecretsTest, PlaintextOffThisHostTakesInsecure) {
  const std::string off_host = "--target=192.0.2.1:7070";
  ProcessResult map =
      RunWithInput({Runfile("client/cli/cnp"), "map", off_host, "svc_fns.doubled"}, R"({"_id":"a"})");
  EXPECT_EQ(map.exit_code, 2) << map.err;
  EXPECT_THAT(map.err, AllOf(HasSubstr("refusing to connect in plaintext to 192.0.2.1:7070"),
                             HasSubstr("--insecure")));
  ProcessResult adapter = RunWithInput({Runfile("adapter/cnp-adapter"), off_host}, "");
  EXPECT_EQ(adapter.exit_code, 2) << adapter.err;
  EXPECT_THAT(adapter.err, HasSubstr("refusing to connect in plaintext to 192.0.2.1:7070"));
  // With --insecure both go on (the adapter reads CouchDB's input, here none, and ends).
  ProcessResult insecure =
      RunWithInput({Runfile("adapter/cnp-adapter"), off_host, "--insecure"}, "");
  EXPECT_EQ(insecure.exit_code, 0) << insecure.err;
  EXPECT_THAT(insecure.err, Not(HasSubstr("refusing")));
}

// 192.0.2.1 (TEST-NET-1) stands for any address off this host; nothing connects to it: the
// clients refuse before they connect, as they read their options.
TEST(PlaintextSecretsTest, NoTokenOrCouchDbPasswordGoesInPlaintextOffThisHost) {
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/token", "t0ken-for-off-host-calls\n");
  WriteFile(dir + "/design.yml", "towns:\n  views:\n    by_town: svc_fns.doubled\n");
  const std::string off_host = "--target=192.0.2.1:7070";
  const absl::Time started = absl::Now();
  ProcessResult map = RunWithInput({Runfile("client/cli/cnp"), "map", off_host,
                                    "--auth-token-file=" + dir + "/token", "svc_fns.doubled"},
                                   R"({"_id":"a"})");
  EXPECT_EQ(map.exit_code, 2) << map.err;
  EXPECT_THAT(map.err, AllOf(HasSubstr("refusing to send the bearer token"),
                             HasSubstr("in plaintext to 192.0.2.1:7070"), HasSubstr("add --tls")));
  // With --insecure, which lets the documents go in plaintext but never a secret.
  ProcessResult upload = RunWithInput({Runfile("client/cli/cnp"), "upload", off_host, "--insecure",
                                       "http://admin:TopSecretPw@localhost:5984", "mydb",
                                       dir + "/design.yml"},
                                      "");
  EXPECT_EQ(upload.exit_code, 2) << upload.err;
  EXPECT_THAT(upload.err, AllOf(HasSubstr("refusing to send CouchDB's user and password"),
                                HasSubstr("add --tls")));
  EXPECT_THAT(upload.err, ::testing::Not(HasSubstr("TopSecretPw")));
  ProcessResult adapter = RunWithInput(
      {Runfile("adapter/cnp-adapter"), off_host, "--auth-token-file=" + dir + "/token"},
      "[\"reset\"]\n");
  EXPECT_EQ(adapter.exit_code, 2) << adapter.err;
  EXPECT_THAT(adapter.err, AllOf(HasSubstr("refusing to send the bearer token"),
                                 HasSubstr("add --tls")));
  EXPECT_EQ(adapter.out, "");  // refused before reading from CouchDB
  // Refused as the options are read, not after a connection attempt timed out (5 s each).
  EXPECT_LT(absl::Now() - started, absl::Seconds(4));
}

}  // namespace
}  // namespace cnp::security_testing
