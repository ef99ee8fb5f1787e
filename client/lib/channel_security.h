// How a client proves it may talk to cnp-server, and checks that it talks to the right one:
// TLS (with the server's CA, optionally a client certificate for mutual TLS) and a bearer
// token; on a unix socket, the user the server runs as (common/socket_trust.h). Shared by the
// client library, cnp and cnp-adapter so that all take the same flags: --tls-ca, --tls-cert,
// --tls-key, --auth-token-file (and --tls for the system's CAs), --server-user.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace cnp::client {

struct ChannelSecurity {
  bool tls = false;            // TLS with the system's CAs (implied by any file below)
  std::string tls_ca_file;     // PEM CAs that signed the server's certificate
  std::string tls_cert_file;   // PEM client certificate, for servers that require one
  std::string tls_key_file;    // its private key
  std::string auth_token_file; // bearer token, sent as "authorization: Bearer <token>"
  // A unix socket's server may run as this user (a name or uid) besides this user and root:
  // its socket, directory and process may belong to it (common/socket_trust.h).
  std::string server_user;
  // Plaintext to a TCP target beyond loopback, which is otherwise refused: anyone on the way
  // could read the documents and answers, or pose as the service (and accept every write).
  // For a network the operator trusts; secrets still never go in plaintext off this host.
  bool insecure = false;

  bool UsesTls() const {
    return tls || !tls_ca_file.empty() || !tls_cert_file.empty() || !tls_key_file.empty();
  }
};

struct LoadedChannelSecurity {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // The value of the "authorization" header every call carries; empty without a token.
  std::string authorization;
};

// INVALID_ARGUMENT when `security` asks for TLS to a unix socket (which never uses it), or to a
// comma-separated list of addresses: gRPC
// then checks every replica's certificate against the whole list as one name ("a:1,b:2"), which
// no certificate carries, so every connection would fail as if no server answered. The message
// says to name the replicas with dns:///NAME:PORT instead. Clients check this as they read their
// flags, so the user hears it before anything is sent.
absl::Status CheckTlsTarget(const ChannelSecurity& security, const std::string& target);

// INVALID_ARGUMENT when `secret` (what it is: the bearer token, CouchDB's user and password)
// would travel in plaintext off this host: to a TCP target without TLS whose addresses are not
// all loopback (channel_target.h, TargetStaysOnThisHost). cnp-server never accepts a token in
// plaintext off loopback; a client must not have sent it before the server could refuse it.
// The message points at --tls. Clients check this with their flags, before anything is sent.
inline constexpr absl::string_view kBearerToken =
    "the bearer token (--auth-token-file; ChannelSecurity::auth_token_file in the client library)";
absl::Status CheckSecretStaysPrivate(const ChannelSecurity& security, const std::string& target,
                                     absl::string_view secret);

// Reads the files `security` names (after CheckTlsTarget). Unix-socket targets never use TLS (the socket's
// permissions and the server's peer check protect them), but still send the token. A token
// for a plaintext target off this host is refused (CheckSecretStaysPrivate).
absl::StatusOr<LoadedChannelSecurity> LoadChannelSecurity(const ChannelSecurity& security,
                                                          const std::string& target);

// Sets `args` so that a channel to `target` on this host (TargetStaysOnThisHost) goes straight
// there, never through the proxy gRPC otherwise takes from grpc_proxy, https_proxy or
// http_proxy: that proxy would read what a plaintext channel sends (the bearer token, CouchDB's
// password in a Sync), and could not reach this host's loopback anyway. A channel to another
// host follows the environment, as curl does; what it sends there is under TLS.
void KeepLocalTargetOffProxies(const std::string& target, grpc::ChannelArguments& args);

}  // namespace cnp::client
