// Who may connect to cnp-server, as configured (README "Security"), and the gRPC credentials
// its TCP listeners use.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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

class TlsFiles;

// The credentials of TCP listeners: TLS as `files` (tls_files.h) hold it, followed through
// reloads, when `security` uses TLS; plaintext otherwise.
std::shared_ptr<grpc::ServerCredentials> TcpServerCredentials(const TransportSecurity& security,
                                                              const TlsFiles* files);

}  // namespace cnp::rpc
