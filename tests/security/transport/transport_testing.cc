#include "tests/security/transport/transport_testing.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "cnp/v1/functions.grpc.pb.h"

namespace cnp::security_testing {

using ::cnp::testing::MakeTempDir;
using ::cnp::testing::Runfile;

std::string FunctionsDir() { return Runfile("tests/functions/server"); }

std::unique_ptr<ServerProcess> LaunchServer(ServerOptions options) {
  options.fresh_socket = false;
  options.args.insert(options.args.begin(),
                      {"--workers=1", "--grpc-threads=2", "--python-path=" + FunctionsDir()});
  return ServerProcess::Launch(std::move(options));
}

std::unique_ptr<ServerProcess> LaunchServerWithoutNetwork(ServerOptions options,
                                                          std::string& why) {
  constexpr const char* kUnshare = "/usr/bin/unshare";
  if (::cnp::testing::RunToCompletion({kUnshare, "--net", "true"}) != 0) {
    why = absl::StrCat(kUnshare, " --net failed (it needs root or CAP_SYS_ADMIN): without a "
                       "namespace of its own, a server on 0.0.0.0 would be open to the network");
    return nullptr;
  }
  // cnp-server's own pid, in the namespace unshare made: unshare execs it.
  const std::string wrapper = MakeTempDir("netns") + "/cnp-server";
  WriteFile(wrapper,
            absl::StrCat("#!/bin/sh\nexec ", kUnshare, " --net -- '",
                         options.server_binary.empty() ? Runfile("service/cnp-server")
                                                       : options.server_binary,
                         "' \"$@\"\n"),
            0755);
  options.server_binary = wrapper;
  return LaunchServer(std::move(options));
}

absl::StatusOr<Certificates> MakeCertificates() {
  Certificates c;
  c.dir = MakeTempDir("certs");
  auto path = [&c](const char* name) { return absl::StrCat(c.dir, "/", name); };
  c.ca = path("ca.pem");
  c.server_cert = path("server.pem");
  c.server_key = path("server.key");
  c.client_cert = path("client.pem");
  c.client_key = path("client.key");
  c.other_ca = path("other-ca.pem");
  WriteFile(path("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n", 0644);
  const std::vector<std::vector<std::string>> steps = {
      {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
       "ca.pem", "-days", "1", "-subj", "/CN=cnp test CA"},
      {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other-ca.key",
       "-out", "other-ca.pem", "-days", "1", "-subj", "/CN=cnp other CA"},
      {"openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
       "server.csr", "-subj", "/CN=localhost"},
      {"openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
       "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "server.ext"},
      {"openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out",
       "client.csr", "-subj", "/CN=couchdb-node-1"},
      {"openssl", "x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
       "-CAcreateserial", "-out", "client.pem", "-days", "1"},
  };
  for (const auto& step : steps) {
    if (int rc = ::cnp::testing::RunToCompletion(step, c.dir); rc != 0) {
      return absl::InternalError(absl::StrCat(step[0], " ", step[1], " failed with ", rc));
    }
  }
  ::chmod(c.server_key.c_str(), 0600);
  ::chmod(c.client_key.c_str(), 0600);
  return c;
}

grpc::Status MapOnANewConnection(const std::string& target, const std::string& doc,
                                 absl::Duration timeout) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub = v1::Functions::NewStub(
      grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext context;
  context.set_wait_for_ready(true);
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::MapRequest request;
  request.add_functions("svc_fns.doubled");
  request.add_docs(doc);
  v1::MapResponse response;
  return stub->Map(&context, request, &response);
}

}  // namespace cnp::security_testing
