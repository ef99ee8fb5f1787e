// How a client proves it may talk to cnp-server, and checks that it talks to the right one:
// TLS (with the server's CA, optionally a client certificate for mutual TLS) and a bearer
// token. Shared by the client library, cnp and cnp-adapter so that all take the same flags:
// --tls-ca, --tls-cert, --tls-key, --auth-token-file (and --tls for the system's CAs).
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"

namespace cnp::client {

struct ChannelSecurity {
  bool tls = false;            // TLS with the system's CAs (implied by any file below)
  std::string tls_ca_file;     // PEM CAs that signed the server's certificate
  std::string tls_cert_file;   // PEM client certificate, for servers that require one
  std::string tls_key_file;    // its private key
  std::string auth_token_file; // bearer token, sent as "authorization: Bearer <token>"

  bool UsesTls() const {
    return tls || !tls_ca_file.empty() || !tls_cert_file.empty() || !tls_key_file.empty();
  }
};

struct LoadedChannelSecurity {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // The value of the "authorization" header every call carries; empty without a token.
  std::string authorization;
};

// INVALID_ARGUMENT when `security` asks for TLS to a comma-separated list of addresses: gRPC
// then checks every replica's certificate against the whole list as one name ("a:1,b:2"), which
// no certificate carries, so every connection would fail as if no server answered. The message
// says to name the replicas with dns:///NAME:PORT instead. Clients check this as they read their
// flags, so the user hears it before anything is sent.
absl::Status CheckTlsTarget(const ChannelSecurity& security, const std::string& target);

// Reads the files `security` names (after CheckTlsTarget). Unix-socket targets never use TLS (the socket's
// permissions and the server's peer check protect them), but still send the token.
absl::StatusOr<LoadedChannelSecurity> LoadChannelSecurity(const ChannelSecurity& security,
                                                          const std::string& target);

}  // namespace cnp::client
