// Who may call over TCP: TLS (plaintext clients and clients that do not trust the server's CA
// get nowhere), mutual TLS (no client certificate, no connection), the bearer token (missing
// or wrong: UNAUTHENTICATED, with an access-log line that never shows the token), and the
// refusal of a plaintext listener on a non-loopback address without --insecure.
#include <arpa/inet.h>
#include <signal.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/lib/cnp_client.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/security/transport/transport_testing.h"
#include "tests/support/metrics_scrape.h"
#include "tests/support/session_stream.h"
#include "tests/support/spawn.h"

namespace cnp::security_testing {
namespace {

using ::cnp::testing::MetricsPort;
using ::cnp::testing::Scrape;
using ::cnp::testing::Value;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kDoc[] = R"({"_id":"a","n":21})";

absl::StatusOr<std::unique_ptr<client::Client>> ConnectTo(
    int port, const client::ChannelSecurity& security, absl::Duration timeout = absl::Seconds(10)) {
  return client::Client::Connect(absl::StrCat("127.0.0.1:", port), security, timeout);
}

// A plaintext listener on loopback that requires `token`, written to `dir`/token.
std::unique_ptr<ServerProcess> LaunchLoopbackServerWithToken(const std::string& dir,
                                                             const std::string& token) {
  WriteFile(dir + "/token", token + "\n");
  return LaunchServer({.args = {"--listen=127.0.0.1:0", "--auth-token-file=" + dir + "/token"}});
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Certificates> certs = MakeCertificates();
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *certs;
  }
  static constexpr char kToken[] = "s3cret-token-7c1f";

  // A TLS listener on loopback that requires kToken.
  std::unique_ptr<ServerProcess> LaunchTlsServerWithToken() {
    WriteFile(certs_.dir + "/token", absl::StrCat(kToken, "\n"));
    return LaunchServer({.args = {"--listen=127.0.0.1:0", "--tls-cert=" + certs_.server_cert,
                                  "--tls-key=" + certs_.server_key,
                                  "--auth-token-file=" + certs_.dir + "/token"}});
  }
  // A channel to it that trusts the test CA.
  std::shared_ptr<grpc::Channel> TlsChannelTo(const ServerProcess& server) {
    grpc::SslCredentialsOptions tls;
    std::ifstream ca(certs_.ca);
    tls.pem_root_certs.assign(std::istreambuf_iterator<char>(ca),
                              std::istreambuf_iterator<char>());
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", server.Port()),
                               grpc::SslCredentials(tls));
  }

  Certificates certs_;
};

// Found by a security review: TLS off loopback with neither a token nor client certificates
// started without a word, and anyone who could reach it could run functions. Refused now, as
// plaintext is, before any worker starts; a token says who may call.
TEST_F(TlsTest, TlsOffLoopbackNeedsATokenOrClientCertificates) {
  auto refused = LaunchServer({.args = {"--listen=0.0.0.0:0", "--tls-cert=" + certs_.server_cert,
                                        "--tls-key=" + certs_.server_key}});
  ASSERT_FALSE(refused->ready());
  EXPECT_EQ(refused->ExitCode(), 2) << refused->Log();
  EXPECT_THAT(refused->Log(), AllOf(HasSubstr("refusing to listen on 0.0.0.0:0 with nothing to say who may call"),
                                    HasSubstr("--auth-token-file"), HasSubstr("--tls-client-ca")));
  EXPECT_THAT(refused->Log(), Not(HasSubstr("starting 1 workers")));

  // With a token it starts: in a network namespace of its own, so that nothing off the host
  // could reach it.
  WriteFile(certs_.dir + "/token", absl::StrCat(kToken, "\n"));
  std::string why;
  auto allowed = LaunchServerWithoutNetwork(
      {.args = {"--listen=0.0.0.0:0", "--tls-cert=" + certs_.server_cert, "--tls-key=" + certs_.server_key,
                "--auth-token-file=" + certs_.dir + "/token"}},
      why);
  if (allowed == nullptr) GTEST_SKIP() << "the allowed case: " << why;
  EXPECT_TRUE(allowed->ready()) << allowed->Log();
  EXPECT_THAT(allowed->Log(), HasSubstr("listening on 0.0.0.0:0 (port"));
}

TEST_F(TlsTest, TlsServesAndPlaintextOrAnUntrustedCaGetsNowhere) {
  auto server = LaunchServer({.args = {"--listen=127.0.0.1:0",
                                                "--tls-cert=" + certs_.server_cert,
                                                "--tls-key=" + certs_.server_key}});
  ASSERT_TRUE(server->ready()) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("with TLS (certificate CN=localhost, expires "));
  // The test's certificates are made for a day: well inside the warning's two weeks.
  EXPECT_THAT(server->Log(), HasSubstr(") expires in 23h"));
  const int port = server->Port();

  auto trusted = ConnectTo(port, {.tls_ca_file = certs_.ca});
  ASSERT_TRUE(trusted.ok()) << trusted.status();
  auto mapped = (*trusted)->Map({"svc_fns.doubled"}, {kDoc});
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_EQ(mapped->results(0).rows(), R"([[["a",42]]])");

  auto plaintext = ConnectTo(port, {}, absl::Seconds(2));
  EXPECT_FALSE(plaintext.ok());
  auto untrusted = ConnectTo(port, {.tls_ca_file = certs_.other_ca}, absl::Seconds(2));
  EXPECT_FALSE(untrusted.ok());
  EXPECT_THAT(untrusted.status().message(), HasSubstr("TLS handshake"));
}

// A probe: 2,000 plaintext connections to a TLS listener wrote 2,000 lines of gRPC's own text
// ("Handshake failed ...") into a log set to JSON, before any authentication, at 3,000 a second.
// gRPC's lines now go through the service's log: its format, at most 20 a second.
TEST_F(TlsTest, FailedHandshakesAreLoggedInTheServiceFormatAndBounded) {
  auto server = LaunchServer({.args = {"--listen=127.0.0.1:0", "--log-format=json",
                                       "--tls-cert=" + certs_.server_cert,
                                       "--tls-key=" + certs_.server_key}});
  ASSERT_TRUE(server->ready()) << server->Log();
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(server->Port()));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  constexpr int kConnections = 300;
  for (int i = 0; i < kConnections; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
      constexpr char kPlaintext[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
      // Whether it is taken does not matter: the handshake fails either way.
      [[maybe_unused]] const ssize_t sent = ::write(fd, kPlaintext, sizeof kPlaintext - 1);
    }
    ::close(fd);
  }
  ASSERT_TRUE(server->WaitForLog("Handshake failed", absl::Seconds(30))) << server->Log();
  int handshake_lines = 0;
  for (absl::string_view line : absl::StrSplit(server->Log(), '\n', absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StartsWith(line, "{") && absl::EndsWith(line, "}")) << line;
    handshake_lines += absl::StrContains(line, "Handshake failed") ? 1 : 0;
  }
  // At most the budget of a few seconds, however many connections failed.
  EXPECT_LE(handshake_lines, 100) << server->Log();
}

TEST_F(TlsTest, MutualTlsRefusesAClientWithoutACertificate) {
  auto server = LaunchServer({.args = {"--listen=127.0.0.1:0",
                                                "--tls-cert=" + certs_.server_cert,
                                                "--tls-key=" + certs_.server_key,
                                                "--tls-client-ca=" + certs_.ca}});
  ASSERT_TRUE(server->ready()) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("with mutual TLS"));
  const int port = server->Port();

  auto anonymous = ConnectTo(port, {.tls_ca_file = certs_.ca}, absl::Seconds(2));
  if (anonymous.ok()) {
    // TLS 1.3 finishes the client's side of the handshake before the server has checked the
    // certificate: then the first call is where the refusal shows.
    EXPECT_FALSE((*anonymous)->Map({"svc_fns.doubled"}, {kDoc}).ok());
  }

  auto known = ConnectTo(port, {.tls_ca_file = certs_.ca,
                                .tls_cert_file = certs_.client_cert,
                                .tls_key_file = certs_.client_key});
  ASSERT_TRUE(known.ok()) << known.status();
  auto mapped = (*known)->Map({"svc_fns.doubled"}, {kDoc});
  ASSERT_TRUE(mapped.ok()) << mapped.status();

  // Every Upload is logged with the peer's verified certificate name.
  grpc::ClientContext context;
  (*known)->PrepareContext(context, absl::Seconds(30));
  v1::UploadRequest request;
  request.set_check_only(true);
  auto upload = (*known)->stub().Upload(&context, request);
  v1::UploadEvent event;
  while (upload->Read(&event)) {
  }
  upload->Finish().ok();
  EXPECT_THAT(server->Log(),
              AllOf(HasSubstr("ACCESS"), HasSubstr("upload peer=ipv4:127.0.0.1:"),
                    HasSubstr("cert=couchdb-node-1"), HasSubstr("call=Upload")));
}

// What a Map on a new TLS connection (never one an earlier channel opened) comes to, the
// client trusting the CA in `ca_file` and showing the client certificate in `cert`/`key`, if
// given.
grpc::StatusCode MapOverNewTlsConnection(int port, const std::string& ca_file,
                                         const std::string& cert = "",
                                         const std::string& key = "") {
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = ::cnp::testing::ReadFile(ca_file);
  if (!cert.empty()) {
    tls.pem_cert_chain = ::cnp::testing::ReadFile(cert);
    tls.pem_private_key = ::cnp::testing::ReadFile(key);
  }
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub = v1::Functions::NewStub(grpc::CreateCustomChannel(
      absl::StrCat("127.0.0.1:", port), grpc::SslCredentials(tls), args));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::MapRequest request;
  request.add_functions("svc_fns.doubled");
  request.add_docs(kDoc);
  v1::MapResponse response;
  return stub->Map(&context, request, &response).error_code();
}

// Waits (trying a new connection every 200 ms, for up to 30 s: gRPC reads what a reload made of
// the TLS files within a second) until `attempt` comes to OK, or to anything else when
// `ok_wanted` is false; the last code it came to.
grpc::StatusCode WaitForCode(const std::function<grpc::StatusCode()>& attempt, bool ok_wanted) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  grpc::StatusCode code = attempt();
  while ((code == grpc::StatusCode::OK) != ok_wanted && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(200));
    code = attempt();
  }
  return code;
}

// A renewed certificate serves new connections after a SIGHUP, without a restart; before, the
// server had to be restarted, dropping every call, or clients met the expired certificate.
// Here the certificate is replaced by one another CA signed, each file renamed into place. A
// reload between the two renames finds a key that is not the certificate's and keeps the pair
// before (read as they lay, such a pair broke every new handshake until the key followed).
TEST_F(TlsTest, ARenewedCertificateServesNewConnectionsAfterAReload) {
  for (const std::vector<std::string>& step : std::vector<std::vector<std::string>>{
           {"openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "renewed.key", "-out",
            "renewed.csr", "-subj", "/CN=localhost"},
           {"openssl", "x509", "-req", "-in", "renewed.csr", "-CA", "other-ca.pem", "-CAkey",
            "other-ca.key", "-CAcreateserial", "-out", "renewed.pem", "-days", "1", "-extfile",
            "server.ext"}}) {
    ASSERT_EQ(::cnp::testing::RunToCompletion(step, certs_.dir), 0) << step[0] << " " << step[1];
  }
  ::chmod((certs_.dir + "/renewed.key").c_str(), 0600);
  auto server = LaunchServer({.args = {"--listen=127.0.0.1:0", "--tls-cert=" + certs_.server_cert,
                                       "--tls-key=" + certs_.server_key}});
  ASSERT_TRUE(server->ready()) << server->Log();
  const int port = server->Port();
  ASSERT_EQ(MapOverNewTlsConnection(port, certs_.ca), grpc::StatusCode::OK) << server->Log();
  ASSERT_NE(MapOverNewTlsConnection(port, certs_.other_ca), grpc::StatusCode::OK);

  // A key others may read, renamed into place, is refused at the reload as it is at a start.
  const std::string loose_key = certs_.dir + "/loose.key";
  WriteFile(loose_key, ::cnp::testing::ReadFile(certs_.server_key), 0644);
  ASSERT_EQ(::rename(loose_key.c_str(), certs_.server_key.c_str()), 0);
  server->Signal(SIGHUP);
  ASSERT_TRUE(server->WaitForLog("has mode 0644", absl::Seconds(30))) << server->Log();
  ::chmod(certs_.server_key.c_str(), 0600);

  ASSERT_EQ(::rename((certs_.dir + "/renewed.pem").c_str(), certs_.server_cert.c_str()), 0);
  server->Signal(SIGHUP);
  ASSERT_TRUE(server->WaitForLog("is not the key of the certificate", absl::Seconds(30)))
      << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("new connections still get the certificate read before"));
  EXPECT_EQ(MapOverNewTlsConnection(port, certs_.ca), grpc::StatusCode::OK) << server->Log();

  ASSERT_EQ(::rename((certs_.dir + "/renewed.key").c_str(), certs_.server_key.c_str()), 0);
  server->Signal(SIGHUP);
  ASSERT_TRUE(server->WaitForLog("read the TLS files again", absl::Seconds(30))) << server->Log();
  EXPECT_EQ(WaitForCode([&] { return MapOverNewTlsConnection(port, certs_.other_ca); }, true),
            grpc::StatusCode::OK)
      << server->Log();
  EXPECT_NE(MapOverNewTlsConnection(port, certs_.ca), grpc::StatusCode::OK);
}

// Under mutual TLS the client CA is reloaded the same way: a CA taken out of --tls-client-ca
// (one that signed a certificate since stolen) stops being trusted without a restart.
TEST_F(TlsTest, AClientCaTakenOutIsNoLongerTrustedAfterAReload) {
  const std::string client_ca = certs_.dir + "/client-ca.pem";
  WriteFile(client_ca, ::cnp::testing::ReadFile(certs_.ca));
  auto server = LaunchServer({.args = {"--listen=127.0.0.1:0", "--tls-cert=" + certs_.server_cert,
                                       "--tls-key=" + certs_.server_key,
                                       "--tls-client-ca=" + client_ca}});
  ASSERT_TRUE(server->ready()) << server->Log();
  const int port = server->Port();
  auto known_client = [&] {
    return MapOverNewTlsConnection(port, certs_.ca, certs_.client_cert, certs_.client_key);
  };
  ASSERT_EQ(known_client(), grpc::StatusCode::OK) << server->Log();

  // An emptied CA file is refused at the reload, said, and the CAs before stay.
  WriteFile(client_ca + ".new", "");
  ASSERT_EQ(::rename((client_ca + ".new").c_str(), client_ca.c_str()), 0);
  server->Signal(SIGHUP);
  ASSERT_TRUE(server->WaitForLog("holds no PEM certificate", absl::Seconds(30))) << server->Log();
  EXPECT_EQ(known_client(), grpc::StatusCode::OK) << server->Log();

  WriteFile(client_ca + ".new", ::cnp::testing::ReadFile(certs_.other_ca));
  ASSERT_EQ(::rename((client_ca + ".new").c_str(), client_ca.c_str()), 0);
  server->Signal(SIGHUP);
  ASSERT_TRUE(server->WaitForLog("read the TLS files again", absl::Seconds(30))) << server->Log();
  EXPECT_NE(WaitForCode(known_client, false), grpc::StatusCode::OK) << server->Log();
}

// A key that needs a passphrase is refused, saying so: OpenSSL's default would have asked for
// the passphrase on the terminal or stdin, and the server waited there (at a reload, its
// control loop with it).
TEST_F(TlsTest, AKeyWithAPassphraseIsRefusedWithoutAskingForIt) {
  const std::string locked = certs_.dir + "/locked.key";
  ASSERT_EQ(::cnp::testing::RunToCompletion({"openssl", "pkey", "-in", certs_.server_key,
                                             "-aes256", "-passout", "pass:s3cret", "-out",
                                             locked}),
            0);
  ::chmod(locked.c_str(), 0600);
  auto server = LaunchServer({.args = {"--listen=127.0.0.1:0", "--tls-cert=" + certs_.server_cert,
                                       "--tls-key=" + locked}});
  ASSERT_FALSE(server->ready());
  EXPECT_NE(server->ExitCode(), 0);
  EXPECT_THAT(server->Log(), HasSubstr("holds no PEM private key that can be read without a "
                                       "passphrase"));
}

TEST_F(TlsTest, AKeyOthersCanReadIsRefused) {
  ::chmod(certs_.server_key.c_str(), 0644);
  auto server = LaunchServer({.args = {"--listen=127.0.0.1:0",
                                                "--tls-cert=" + certs_.server_cert,
                                                "--tls-key=" + certs_.server_key}});
  ASSERT_FALSE(server->ready());
  EXPECT_NE(server->ExitCode(), 0);
  EXPECT_THAT(server->Log(), HasSubstr("chmod 600"));
}

TEST(TokenTest, CallsWithoutTheRightTokenAreUnauthenticatedAndLogged) {
  const std::string dir = ShortTempDir();
  const std::string token = "s3cret-token-7c1f";
  WriteFile(dir + "/token", token + "\n");
  WriteFile(dir + "/wrong", "not-the-token\n");
  auto server = LaunchServer({.args = {"--listen=127.0.0.1:0",
                                                "--listen=unix:" + dir + "/s/cnp.sock",
                                                "--auth-token-file=" + dir + "/token"}});
  ASSERT_TRUE(server->ready()) << server->Log();
  const int port = server->Port();

  auto without = ConnectTo(port, {});
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_EQ((*without)->Map({"svc_fns.doubled"}, {kDoc}).status().code(),
            absl::StatusCode::kUnauthenticated);
  // The stream CouchDB's adapter uses is refused the same way.
  grpc::ClientContext context;
  auto session = (*without)->stub().Session(&context);
  v1::SessionInput input;
  input.set_line(R"(["reset"])");
  session->Write(input);
  session->WritesDone();
  v1::SessionOutput output;
  EXPECT_FALSE(session->Read(&output));
  EXPECT_EQ(session->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);

  auto wrong = ConnectTo(port, {.auth_token_file = dir + "/wrong"});
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  auto refused = (*wrong)->Map({"svc_fns.doubled"}, {kDoc});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(refused.status().message(), HasSubstr("--auth-token-file"));

  auto right = ConnectTo(port, {.auth_token_file = dir + "/token"});
  ASSERT_TRUE(right.ok()) << right.status();
  EXPECT_TRUE((*right)->Map({"svc_fns.doubled"}, {kDoc}).ok());

  // The unix socket is protected by its permissions and the peer's uid, not the token.
  auto local = client::Client::Connect("unix:" + dir + "/s/cnp.sock");
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_TRUE((*local)->Map({"svc_fns.doubled"}, {kDoc}).ok());

  const std::string log = server->Log();
  EXPECT_THAT(log, HasSubstr("refused peer=ipv4:127.0.0.1:"));
  EXPECT_THAT(log, HasSubstr("call=Map code=UNAUTHENTICATED reason=\"no bearer token\""));
  EXPECT_THAT(log, HasSubstr("call=Session code=UNAUTHENTICATED reason=\"no bearer token\""));
  EXPECT_THAT(log, HasSubstr("call=Map code=UNAUTHENTICATED reason=\"wrong bearer token\""));
  EXPECT_THAT(log, Not(HasSubstr(token)));
  EXPECT_THAT(log, Not(HasSubstr("not-the-token")));
}

// A proxy named in the environment (gRPC reads grpc_proxy, https_proxy and http_proxy, as
// curl does) never sees a call to this host: it would read the token of a plaintext channel,
// and could not reach this host's loopback anyway.
TEST(TokenTest, AProxyInTheEnvironmentNeverSeesACallToThisHost) {
  const std::string dir = ShortTempDir();
  auto server = LaunchLoopbackServerWithToken(dir, "s3cret-token-7c1f");
  ASSERT_TRUE(server->ready()) << server->Log();
  // The "proxy": a loopback listener nobody answers; a connection to it waits in its backlog.
  const int proxy = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ASSERT_GE(proxy, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ASSERT_EQ(::bind(proxy, reinterpret_cast<sockaddr*>(&address), length), 0);
  ASSERT_EQ(::listen(proxy, 16), 0);
  ASSERT_EQ(::getsockname(proxy, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const std::string proxy_url = absl::StrCat("http://127.0.0.1:", ntohs(address.sin_port));
  for (const char* variable : {"grpc_proxy", "https_proxy", "http_proxy"}) {
    ::setenv(variable, proxy_url.c_str(), 1);
  }

  for (const std::string& target : {absl::StrCat("127.0.0.1:", server->Port()),
                                    absl::StrCat("localhost:", server->Port())}) {
    auto client = client::Client::Connect(target, {.auth_token_file = dir + "/token"},
                                          absl::Seconds(5));
    ASSERT_TRUE(client.ok()) << target << ": " << client.status();
    EXPECT_TRUE((*client)->Map({"svc_fns.doubled"}, {kDoc}).ok()) << target;
  }
  for (const char* variable : {"grpc_proxy", "https_proxy", "http_proxy"}) ::unsetenv(variable);
  EXPECT_LT(::accept(proxy, nullptr, nullptr), 0) << "a connection reached the proxy";
  EXPECT_EQ(errno, EAGAIN);
  ::close(proxy);
}

// What a call with `authorization` set to `header` (none when empty) is answered.
grpc::Status MapWithAuthorization(const std::shared_ptr<grpc::Channel>& channel,
                                  const std::string& header) {
  auto stub = v1::Functions::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  if (!header.empty()) context.AddMetadata("authorization", header);
  v1::MapRequest request;
  request.add_functions("svc_fns.doubled");
  request.add_docs(kDoc);
  v1::MapResponse response;
  return stub->Map(&context, request, &response);
}

// RFC 6750's "Bearer" is an RFC 7235 auth-scheme, whose case does not matter; a header without
// it is told what the header must be, not that the token is wrong. Both places that check it:
// on a plaintext loopback listener (where the call starts) and on a TLS one (gRPC's metadata
// processor, before the request is read).
void ExpectBearerSchemeInAnyCase(const std::shared_ptr<grpc::Channel>& channel,
                                 const std::string& token) {
  for (const char* scheme : {"Bearer", "bearer", "BEARER", "bEaReR"}) {
    grpc::Status status = MapWithAuthorization(channel, absl::StrCat(scheme, " ", token));
    EXPECT_TRUE(status.ok()) << scheme << ": " << status.error_message();
  }
  for (const std::string& header : {token, "Basic " + token, "Bearer" + token, "Token " + token}) {
    grpc::Status status = MapWithAuthorization(channel, header);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << header;
    EXPECT_THAT(status.error_message(),
                AllOf(HasSubstr("the authorization header must be `Bearer TOKEN`"),
                      Not(HasSubstr("wrong bearer token"))))
        << header;
  }
  grpc::Status wrong = MapWithAuthorization(channel, "bearer not-" + token);
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(wrong.error_message(),
              AllOf(HasSubstr("wrong bearer token"), HasSubstr("ChannelSecurity::auth_token_file")));
}

TEST(TokenTest, TheBearerSchemeIsReadInAnyCaseOnAPlaintextListener) {
  const std::string dir = ShortTempDir();
  const std::string token = "s3cret-token-7c1f";
  WriteFile(dir + "/token", token + "\n");
  auto server = LaunchServer(
      {.args = {"--listen=127.0.0.1:0", "--auth-token-file=" + dir + "/token"}});
  ASSERT_TRUE(server->ready()) << server->Log();
  ExpectBearerSchemeInAnyCase(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", server->Port()),
                          grpc::InsecureChannelCredentials()),
      token);
  EXPECT_THAT(server->Log(), HasSubstr("reason=\"not a bearer token\""));
}

TEST_F(TlsTest, TheBearerSchemeIsReadInAnyCaseOnATlsListener) {
  auto server = LaunchTlsServerWithToken();
  ASSERT_TRUE(server->ready()) << server->Log();
  ExpectBearerSchemeInAnyCase(TlsChannelTo(*server), kToken);
  EXPECT_THAT(server->Log(), AllOf(HasSubstr("reason=\"not a bearer token\""),
                                   HasSubstr("checked=\"before the request was read\"")));
}

// Over TLS a call whose token is refused is refused at its headers, where no handler runs to
// count it: it was in the access log but not in cnp_calls_total, whose "Failed calls" panel
// stayed empty while someone tried tokens (an operator's probe). Streams are not counted there.
TEST_F(TlsTest, CallsRefusedForTheirTokenAreCountedAsUnauthenticated) {
  WriteFile(certs_.dir + "/token", absl::StrCat(kToken, "\n"));
  WriteFile(certs_.dir + "/wrong", "not-the-token\n");
  auto server = LaunchServer({.args = {"--listen=127.0.0.1:0", "--tls-cert=" + certs_.server_cert,
                                       "--tls-key=" + certs_.server_key,
                                       "--auth-token-file=" + certs_.dir + "/token",
                                       "--metrics-listen=127.0.0.1:0"}});
  ASSERT_TRUE(server->ready()) << server->Log();
  const client::ChannelSecurity tls{.tls_ca_file = certs_.ca};
  client::ChannelSecurity wrong = tls;
  wrong.auth_token_file = certs_.dir + "/wrong";
  client::ChannelSecurity right = tls;
  right.auth_token_file = certs_.dir + "/token";
  for (const client::ChannelSecurity* security : std::vector<const client::ChannelSecurity*>{
           &tls, &wrong, &right}) {
    auto client = client::Client::Connect(absl::StrCat("localhost:", server->Port()), *security);
    ASSERT_TRUE(client.ok()) << client.status();
    (void)(*client)->Map({"svc_fns.doubled"}, {kDoc});
    grpc::ClientContext context;
    auto session = (*client)->stub().Session(&context);
    session->WritesDone();
    v1::SessionOutput output;
    while (session->Read(&output)) {
    }
    (void)session->Finish();
  }
  const std::string scrape = Scrape(MetricsPort(*server));
  EXPECT_EQ(Value(scrape, R"(cnp_calls_total{rpc="Map",code="16"})"), 2) << scrape;
  EXPECT_EQ(Value(scrape, R"(cnp_calls_total{rpc="Map",code="0"})"), 1) << scrape;
  EXPECT_EQ(Value(scrape, R"(cnp_calls_total{rpc="Session",code="16"})"), -1) << scrape;
}

// On TLS the token is checked before gRPC looks the method up, so the path is the client's to
// invent: a tokenless peer sending each call to a new path gets one line for all of them, naming
// no path of its own (one line each, of its text, before).
TEST_F(TlsTest, TokenlessCallsToInventedPathsAreOneLineNamingNoPath) {
  auto server = LaunchTlsServerWithToken();
  ASSERT_TRUE(server->ready()) << server->Log();
  grpc::GenericStub stub(TlsChannelTo(*server));
  for (int i = 0; i < 30; ++i) {
    const std::string path = i % 2 == 0 ? absl::StrCat("/cnp.v1.Functions/Invented", i)
                                        : absl::StrCat("/invented", i, ".Service/Call");
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::CompletionQueue cq;
    grpc::ByteBuffer request, response;
    auto call = stub.PrepareUnaryCall(&context, path, request, &cq);
    call->StartCall();
    grpc::Status status;
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag;
    bool ok;
    ASSERT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << path;
  }
  ASSERT_TRUE(server->WaitForLog("call=unknown", absl::Seconds(30))) << server->Log();
  const std::string log = server->Log();
  EXPECT_THAT(log, Not(HasSubstr("nvented"))) << log;
  size_t lines = 0;
  for (size_t at = log.find("call=unknown"); at != std::string::npos;
       at = log.find("call=unknown", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << log;
}

// A token is rotated without a restart and without a refused call: the server's file lists the
// new token beside the old, SIGHUP, the clients move over, the old line goes, SIGHUP. Before,
// the file was read once and held one token: a rotation was a restart, and every client with
// the other token refused until it had the new one. `connect` makes a client sending the token
// in the file it is given; `server` requires the tokens in `dir`/token.
void ExpectTokenRotation(const ServerProcess& server, const std::string& dir,
                         const std::function<absl::StatusOr<std::unique_ptr<client::Client>>(
                             const std::string& token_file)>& connect) {
  WriteFile(dir + "/old", "old-token-5d2e-b81f\n");
  WriteFile(dir + "/new", "new-token-9a47-3c60\n");
  auto old_client = connect(dir + "/old");
  auto new_client = connect(dir + "/new");
  ASSERT_TRUE(old_client.ok()) << old_client.status();
  ASSERT_TRUE(new_client.ok()) << new_client.status();
  auto map_code = [](client::Client& client) {
    return client.Map({"svc_fns.doubled"}, {kDoc}).status().code();
  };
  EXPECT_EQ(map_code(**old_client), absl::StatusCode::kOk);
  EXPECT_EQ(map_code(**new_client), absl::StatusCode::kUnauthenticated);

  // Rewrites the server's token file (unless `tokens` is null), reloads, and waits for `logged`.
  auto reload = [&](const char* tokens, const char* logged) {
    if (tokens != nullptr) WriteFile(dir + "/token", tokens);
    server.Signal(SIGHUP);
    return server.WaitForLog(logged, absl::Seconds(30));
  };
  ASSERT_TRUE(reload("new-token-9a47-3c60\n\n  old-token-5d2e-b81f  \n",
                     "2 tokens are accepted from now on"))
      << server.Log();
  // Each named by its SHA-256's beginning, in file order (`printf %s new-token-9a47-3c60 |
  // sha256sum` begins f4c0402a, old-token-5d2e-b81f's 601feb23).
  EXPECT_THAT(server.Log(), HasSubstr("(SHA-256 beginning f4c0402a, 601feb23)"));
  EXPECT_EQ(map_code(**old_client), absl::StatusCode::kOk);
  EXPECT_EQ(map_code(**new_client), absl::StatusCode::kOk);

  ASSERT_TRUE(reload("new-token-9a47-3c60\n", "1 token is accepted from now on")) << server.Log();
  EXPECT_EQ(map_code(**old_client), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(map_code(**new_client), absl::StatusCode::kOk);

  // A token short enough to guess is refused at a reload as at start, and the tokens before stay.
  ASSERT_TRUE(reload("new-token-9a47-3c60\nchangeme\n",
                     "calls still need one of the tokens read before"))
      << server.Log();
  EXPECT_THAT(server.Log(), HasSubstr("holds a token of 8 characters on line 2"));
  EXPECT_EQ(map_code(**old_client), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(map_code(**new_client), absl::StatusCode::kOk);

  // A file the server may not trust at a reload is said, and the tokens before stay.
  WriteFile(dir + "/token", "new-token-9a47-3c60\n");
  ::chmod((dir + "/token").c_str(), 0644);
  ASSERT_TRUE(reload(nullptr, "mode 0644")) << server.Log();
  const std::string log = server.Log();
  const std::string kept = "calls still need one of the tokens read before";
  const size_t first = log.find(kept);
  ASSERT_NE(first, std::string::npos) << log;
  EXPECT_NE(log.find(kept, first + 1), std::string::npos)
      << "the second refused reload did not say the tokens before stay: " << log;
  EXPECT_EQ(map_code(**new_client), absl::StatusCode::kOk);
  EXPECT_EQ(map_code(**old_client), absl::StatusCode::kUnauthenticated);

  EXPECT_THAT(server.Log(), AllOf(Not(HasSubstr("old-token")), Not(HasSubstr("new-token"))));
}

TEST(TokenTest, SighupRotatesTheTokenOnAPlaintextListener) {
  const std::string dir = ShortTempDir();
  auto server = LaunchLoopbackServerWithToken(dir, "old-token-5d2e-b81f");
  ASSERT_TRUE(server->ready()) << server->Log();
  ExpectTokenRotation(*server, dir, [&](const std::string& token_file) {
    return ConnectTo(server->Port(), {.auth_token_file = token_file});
  });
}

// A long-running client (a `cnp derive` follower, a service on the client library) follows
// its token file: given the new token there during the rotation, it goes on calling once the
// old one has left the server. Before, it sent the token read when it connected until it was
// restarted, every call failing UNAUTHENTICATED from the moment the server dropped it.
TEST(TokenTest, AClientFollowsItsTokenFileThroughARotation) {
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/client-token", "old-token-5d2e-b81f\n");
  auto server = LaunchLoopbackServerWithToken(dir, "old-token-5d2e-b81f");
  ASSERT_TRUE(server->ready()) << server->Log();
  auto client = ConnectTo(server->Port(), {.auth_token_file = dir + "/client-token"});
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE((*client)->Map({"svc_fns.doubled"}, {kDoc}).ok());

  WriteFile(dir + "/token", "old-token-5d2e-b81f\nnew-token-9a47-3c60\n");
  server->Signal(SIGHUP);
  ASSERT_TRUE(server->WaitForLog("2 tokens are accepted from now on", absl::Seconds(30)))
      << server->Log();
  // The client's file replaced by renaming a new one into place, as a secrets manager does.
  WriteFile(dir + "/client-token.new", "new-token-9a47-3c60\n");
  ASSERT_EQ(::rename((dir + "/client-token.new").c_str(), (dir + "/client-token").c_str()), 0);
  EXPECT_TRUE((*client)->Map({"svc_fns.doubled"}, {kDoc}).ok());

  WriteFile(dir + "/token", "new-token-9a47-3c60\n");
  server->Signal(SIGHUP);
  ASSERT_TRUE(server->WaitForLog("1 token is accepted from now on", absl::Seconds(30)))
      << server->Log();
  auto after = (*client)->Map({"svc_fns.doubled"}, {kDoc});
  EXPECT_TRUE(after.ok()) << after.status();

  // A file that cannot be read at a later look (made unsafe here) leaves the token before.
  ::chmod((dir + "/client-token").c_str(), 0644);
  auto unsafe = (*client)->Map({"svc_fns.doubled"}, {kDoc});
  EXPECT_TRUE(unsafe.ok()) << unsafe.status();
}

TEST_F(TlsTest, SighupRotatesTheTokenOnATlsListener) {
  WriteFile(certs_.dir + "/token", "old-token-5d2e-b81f\n");
  auto server = LaunchServer({.args = {"--listen=127.0.0.1:0", "--tls-cert=" + certs_.server_cert,
                                       "--tls-key=" + certs_.server_key,
                                       "--auth-token-file=" + certs_.dir + "/token"}});
  ASSERT_TRUE(server->ready()) << server->Log();
  ExpectTokenRotation(*server, certs_.dir, [&](const std::string& token_file) {
    return ConnectTo(server->Port(), {.tls_ca_file = certs_.ca, .auth_token_file = token_file});
  });
  // Over TLS the refusals were gRPC's, before the request was read.
  EXPECT_THAT(server->Log(), HasSubstr("checked=\"before the request was read\""));
}

// A token removed from the server's file ends the streams opened with it at their next
// message, not only new calls: before, a Session (a remote cnp-adapter's, open for as long as
// CouchDB runs) or a MapStream opened with a leaked token went on being served after the
// operator had revoked it. A stream whose token is still in the file goes on.
TEST(TokenTest, ARemovedTokenEndsTheStreamsOpenedWithIt) {
  const std::string dir = ShortTempDir();
  auto server = LaunchLoopbackServerWithToken(dir, "old-token-5d2e-b81f\nnew-token-9a47-3c60");
  ASSERT_TRUE(server->ready()) << server->Log();
  WriteFile(dir + "/old", "old-token-5d2e-b81f\n");
  WriteFile(dir + "/new", "new-token-9a47-3c60\n");
  auto old_client = ConnectTo(server->Port(), {.auth_token_file = dir + "/old"});
  auto new_client = ConnectTo(server->Port(), {.auth_token_file = dir + "/new"});
  ASSERT_TRUE(old_client.ok()) << old_client.status();
  ASSERT_TRUE(new_client.ok()) << new_client.status();
  testing::SessionStream revoked(*std::move(old_client));
  testing::SessionStream kept(*std::move(new_client));
  constexpr char kAddFun[] = R"(["add_fun","svc_fns.doubled"])";
  constexpr char kMapDoc[] = R"(["map_doc",{"_id":"b","n":2}])";
  auto ask = [](testing::SessionStream& stream, const std::string& line) {
    return stream.Ask(line).value_or(std::vector<std::string>{});
  };
  ASSERT_THAT(ask(revoked, kAddFun), ElementsAre("true"));
  ASSERT_THAT(ask(kept, kAddFun), ElementsAre("true"));
  // A list is open on the revoked stream when the token goes.
  ASSERT_THAT(ask(revoked, R"(["ddoc","new","_design/l",{"lists":{"l":"svc_fns.listed"}}])"),
              ElementsAre("true"));
  ASSERT_THAT(ask(revoked, R"(["ddoc","_design/l",["lists","l"],[{"total_rows":1},{}]])"),
              ElementsAre(::testing::StartsWith(R"(["start",["head"])")));

  WriteFile(dir + "/token", "new-token-9a47-3c60\n");
  server->Signal(SIGHUP);
  ASSERT_TRUE(server->WaitForLog("1 token is accepted from now on", absl::Seconds(30)))
      << server->Log();

  // The list is served to its end (cut there, it could not be replayed, and CouchDB would get
  // an error for it); the stream ends at the next command.
  EXPECT_THAT(ask(revoked, R"(["list_row",{"id":"a"}])"), ElementsAre(R"(["chunks",["a"]])"));
  EXPECT_THAT(ask(revoked, R"(["list_end"])"), ElementsAre(R"(["end",["tail"]])"));
  EXPECT_EQ(revoked.Ask(kMapDoc), std::nullopt);
  const grpc::Status ended = revoked.Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::UNAUTHENTICATED) << ended.error_message();
  EXPECT_THAT(ended.error_message(),
              HasSubstr("the bearer token this Session stream was opened with is no longer "
                        "accepted"));
  EXPECT_THAT(kept.Ask(kMapDoc).value_or(std::vector<std::string>{}),
              ElementsAre(R"(["log","doubling b"])", R"([[["b",4]]])"));
  EXPECT_TRUE(kept.Finish().ok());
  EXPECT_TRUE(server->WaitForLog("reason=\"bearer token removed\"", absl::Seconds(10)))
      << server->Log();
  EXPECT_THAT(server->Log(), AllOf(Not(HasSubstr("old-token")), Not(HasSubstr("new-token"))));
}

TEST(TokenTest, ATokenFileOthersCanReadIsRefused) {
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/token", "s3cret-token-0thers-read\n", 0644);
  auto server = LaunchServer(
      {.args = {"--listen=127.0.0.1:0", "--auth-token-file=" + dir + "/token"}});
  ASSERT_FALSE(server->ready());
  EXPECT_NE(server->ExitCode(), 0);
  EXPECT_THAT(server->Log(), AllOf(HasSubstr("mode 0644"), HasSubstr("chmod 600")));
}

TEST(UploadLogTest, EveryUploadIsLoggedWithoutCouchDbCredentials) {
  const std::string dir = ShortTempDir();
  auto server = LaunchServer({.args = {"--listen=unix:" + dir + "/s/cnp.sock",
                                                "--access-log=" + dir + "/access.log"}});
  ASSERT_TRUE(server->ready()) << server->Log();
  auto local = client::Client::Connect("unix:" + dir + "/s/cnp.sock");
  ASSERT_TRUE(local.ok()) << local.status();
  grpc::ClientContext context;
  (*local)->PrepareContext(context, absl::Seconds(30));
  v1::UploadRequest request;
  // A password may hold an unencoded '/' or '@': the user info runs to the last '@'.
  request.set_couchdb_url("http://admin:pa55/w0rd@Q@127.0.0.1:9/");
  request.set_database("recipes");
  request.set_check_only(true);
  auto upload = (*local)->stub().Upload(&context, request);
  v1::UploadEvent event;
  while (upload->Read(&event)) {
  }
  upload->Finish().ok();
  struct stat st {};
  ASSERT_EQ(::stat((dir + "/access.log").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  std::ifstream in(dir + "/access.log");
  std::string line;
  std::getline(in, line);
  EXPECT_THAT(line, AllOf(HasSubstr("ACCESS"), HasSubstr("upload peer=unix:"),
                          HasSubstr("couchdb=http://127.0.0.1:9/"), HasSubstr("database=recipes"),
                          HasSubstr("mode=check")));
  EXPECT_THAT(line, Not(HasSubstr("pa55")));
  EXPECT_THAT(line, Not(HasSubstr("w0rd")));
}

TEST(ListenerTest, PlaintextOnANonLoopbackAddressNeedsInsecure) {
  auto refused = LaunchServer({.args = {"--listen=0.0.0.0:0"}});
  ASSERT_FALSE(refused->ready());
  // A configuration error like any other (exit 2), refused before any worker starts: it was
  // refused only once the listeners opened, with the workers running, and exit 1.
  EXPECT_EQ(refused->ExitCode(), 2) << refused->Log();
  EXPECT_THAT(refused->Log(),
              AllOf(HasSubstr("cnp-server: refusing to listen on 0.0.0.0:0 in plaintext"),
                    HasSubstr("--insecure")));
  EXPECT_THAT(refused->Log(), Not(HasSubstr("starting 1 workers")));

  // Allowed, it listens on 0.0.0.0 in plaintext: in a network namespace of its own, so that
  // nothing off the host could reach it. Called over a unix socket it also listens on.
  const std::string dir = ShortTempDir();
  std::string why;
  auto allowed = LaunchServerWithoutNetwork(
      {.args = {"--listen=0.0.0.0:0", "--listen=unix:" + dir + "/s/cnp.sock", "--insecure"}},
      why);
  if (allowed == nullptr) GTEST_SKIP() << "the allowed case: " << why;
  ASSERT_TRUE(allowed->ready()) << allowed->Log();
  EXPECT_THAT(allowed->Log(), HasSubstr("listening on 0.0.0.0:0 (port"));
  auto client = client::Client::Connect("unix:" + dir + "/s/cnp.sock");
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE((*client)->Map({"svc_fns.doubled"}, {kDoc}).ok());
}

TEST(ListenerTest, ATokenIsNeverAcceptedInPlaintextOffLoopback) {
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/token", "s3cret-token-0ff-loopback\n");
  auto refused = LaunchServer(
      {.args = {"--listen=0.0.0.0:0", "--insecure", "--auth-token-file=" + dir + "/token"}});
  ASSERT_FALSE(refused->ready());
  EXPECT_EQ(refused->ExitCode(), 2) << refused->Log();
  EXPECT_THAT(refused->Log(), HasSubstr("refusing to accept a bearer token in plaintext"));
  EXPECT_THAT(refused->Log(), Not(HasSubstr("starting 1 workers")));
}

TEST(ListenerTest, LoopbackPlaintextStaysAllowed) {
  auto server = LaunchServer({.args = {"--listen=127.0.0.1:0"}});
  ASSERT_TRUE(server->ready()) << server->Log();
  auto client = ConnectTo(server->Port(), {});
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE((*client)->Map({"svc_fns.doubled"}, {kDoc}).ok());
}

}  // namespace
}  // namespace cnp::security_testing
