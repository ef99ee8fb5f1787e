// What the transport tests share: cnp-server started their way, and the TLS material they use,
// made with openssl at test time (no key is committed).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "tests/support/files.h"
#include "tests/support/server_process.h"
#include "tests/support/spawn.h"

namespace cnp::security_testing {

// The shared test support these tests use with the helpers below.
using ::cnp::testing::ProcessResult;
using ::cnp::testing::RunWithInput;
using ::cnp::testing::ServerOptions;
using ::cnp::testing::ServerProcess;
using ::cnp::testing::ShortTempDir;
using ::cnp::testing::WriteFile;

// cnp-server as these tests start it (tests/support's ServerProcess::Launch): one worker, two
// gRPC threads, the test functions, and where it listens given by the test (`args` or a
// --config file), never a fresh socket. Whether it started is ready(); if not, ExitCode() and
// Log() say why.
std::unique_ptr<ServerProcess> LaunchServer(ServerOptions options);

// The same in a network namespace of its own (unshare --net), whose only interface is a
// loopback: there a server may bind 0.0.0.0 without being reachable from anywhere but itself.
// Give it a unix --listen too to call it (a socket file is reached from any namespace). Null
// where this test may not make a namespace (unshare needs CAP_SYS_ADMIN), `why` saying so.
std::unique_ptr<ServerProcess> LaunchServerWithoutNetwork(ServerOptions options,
                                                          std::string& why);

// ca.pem; server.pem/server.key for 127.0.0.1 and localhost; client.pem/client.key; all
// signed by ca. other-ca.pem: a CA that signed nothing here.
struct Certificates {
  std::string dir;
  std::string ca, server_cert, server_key, client_cert, client_key, other_ca;
};
absl::StatusOr<Certificates> MakeCertificates();

std::string FunctionsDir();

// A Map of `doc` by svc_fns.doubled, plaintext, on a connection of its own: gRPC would otherwise
// reuse the connection an earlier client of the same target opened, which proves nothing about
// accepting new ones.
grpc::Status MapOnANewConnection(const std::string& target, const std::string& doc,
                                 absl::Duration timeout);

}  // namespace cnp::security_testing
