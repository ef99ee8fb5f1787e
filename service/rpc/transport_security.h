// Who may connect to cnp-server, as configured (README "Security"), and the gRPC credentials
// its TCP listeners use.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/security/server_credentials.h"

namespace cnp::rpc {

struct TransportSecurity {
  // TCP: TLS with this certificate and key; with a client CA, mutual TLS (a client must show
  // a certificate that CA signed).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // TCP: every call must carry this token as "authorization: Bearer <token>".
  std::string auth_token_file;
  // A plaintext TCP listener on an address other than loopback is refused without this.
  bool insecure = false;
  // Unix sockets: >= 0 makes them 0660 with this group; peers whose uid is neither ours, nor
  // root's, nor listed here are refused.
  int socket_gid = -1;
  std::vector<uint32_t> allowed_uids;
  std::string access_log;  // empty: stderr

  bool UsesTls() const { return !tls_cert_file.empty(); }
};

// How often the TLS files are read again, for a renewed certificate or client CA.
inline constexpr absl::Duration kTlsFilesReadEvery = absl::Seconds(5);

// TLS credentials for TCP listeners, or plaintext ones without a certificate. The files are
// checked now (who may read and change them) and followed from then on (kTlsFilesReadEvery).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TcpServerCredentials(
    const TransportSecurity& security);

}  // namespace cnp::rpc
