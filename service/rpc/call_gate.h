// The check at the start of every cnp.v1.Functions call: over TCP, when the server has a bearer
// token (--auth-token-file), the call must carry "authorization: Bearer <token>"; otherwise it
// fails UNAUTHENTICATED with a line in the access log. Unix-socket peers were already checked
// when they connected (their uid, see connection_acceptor.h) and need no token.
//
// The check runs where each call starts, on the thread that serves it, rather than in a gRPC
// AuthMetadataProcessor: only there is the peer's address known, which the access log needs.
// The health and reflection services are not gated: they reveal nothing the public API does not.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"
#include "service/rpc/access_log.h"

namespace cnp::rpc {

class CallGate {
 public:
  // `token` empty: no token is required.
  CallGate(std::string token, const AccessLog& log);

  // OK when the call may go on; UNAUTHENTICATED (and an access-log line) when not.
  absl::Status Admit(const grpc::ServerContext& context, absl::string_view method) const;

  // Who is calling, for log lines: the address, and the verified client certificate's names
  // over mutual TLS.
  static std::string PeerIdentity(const grpc::ServerContext& context);
  // The access log's cert field: those names, comma-separated; empty without a certificate.
  static std::string PeerCertificate(const grpc::ServerContext& context);

 private:
  const std::string expected_;  // "Bearer <token>", or empty
  const AccessLog& log_;
};

// Compares without stopping at the first difference, so that the time taken does not tell an
// attacker how much of a guessed token was right.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace cnp::rpc
