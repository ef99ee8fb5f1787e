// The check at the start of every cnp.v1.Functions call: over TCP, when the server has a bearer
// token (--auth-token-file), the call must carry "authorization: Bearer <token>" (the scheme in
// any case: bearer_authorization.h); otherwise it fails UNAUTHENTICATED with a line in the
// access log, one per peer address, method and reason per 10 s at most, the next counting the calls
// between (refusal_log.h: a client without the token calling in a loop must not grow the log
// as fast as it can call). Unix-socket peers were already checked
// when they connected (their uid, see connection_acceptor.h) and need no token.
//
// On TLS listeners gRPC has already checked the token when the call's headers arrived, before
// reading its request (bearer_token_processor.h, an AuthMetadataProcessor): a call without it
// never gets here, and this check finds the token it let through. gRPC runs such a processor
// for secure credentials only, so on plaintext TCP listeners (where a token is accepted on
// loopback only) this is the only check, made once gRPC has received the whole request's bytes
// (but before our code parses them, request_parsing.h): there --max-grpc-memory bounds what tokenless calls can make it hold. Here the peer's address is
// known, which the access log wants and the processor cannot tell.
// The health and reflection services are not gated: they reveal nothing the public API does not.
//
// A call admitted ends its connection's probation (connection_probation.h): a TCP connection
// that makes no call admitted here soon after it connects is closed.
//
// A stream is admitted once, at its start, and may then run for hours: each of its messages is
// let in by Readmit, which ends it UNAUTHENTICATED once its token has been removed (SIGHUP read
// a token file without it: a token leaked is revoked, not only refused to new calls).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"
#include "service/rpc/accepted_tokens.h"
#include "service/rpc/refusal_log.h"
#include "service/rpc/connection_probation.h"

namespace cnp::rpc {

class CallGate {
 public:
  // `tokens` that require none: no token is required.
  // `probation` (may be null) is told of every call admitted.
  CallGate(std::shared_ptr<const AcceptedTokens> tokens, RefusalLog& refusals,
           ConnectionProbation* probation = nullptr);

  // OK when the call may go on; UNAUTHENTICATED (and an access-log line) when not.
  absl::Status Admit(const grpc::ServerContext& context, absl::string_view method) const;

  // Whether a stream needs Readmit at all: only when the server has tokens.
  bool RequiresTokens() const { return tokens_->Required(); }
  // Where the tokens stand; a stream notes it before its Admit, for its first Readmit.
  uint64_t TokenGeneration() const { return tokens_->Generation(); }
  // Before each message of a stream admitted earlier: OK while the token it was admitted with
  // is accepted. `checked` is the TokenGeneration its token was last checked against; the token
  // is compared again only when the tokens have been read again since (then `checked` moves),
  // so a message costs an atomic load. Refused: UNAUTHENTICATED and an access-log line.
  absl::Status Readmit(const grpc::ServerContext& context, absl::string_view method,
                       uint64_t& checked) const;

  // Who is calling, for log lines: the address, and the verified client certificate's names
  // over mutual TLS.
  static std::string PeerIdentity(const grpc::ServerContext& context);
  // The access log's cert field: those names, comma-separated; empty without a certificate.
  static std::string PeerCertificate(const grpc::ServerContext& context);

 private:
  absl::Status CheckToken(const grpc::ServerContext& context, absl::string_view method) const;
  static std::optional<absl::string_view> AuthorizationHeader(const grpc::ServerContext& context);
  void LogRefusal(const grpc::ServerContext& context, const std::string& peer,
                  absl::string_view method, absl::string_view reason) const;

  const std::shared_ptr<const AcceptedTokens> tokens_;
  RefusalLog* const refusals_;
  ConnectionProbation* const probation_;
};


}  // namespace cnp::rpc
