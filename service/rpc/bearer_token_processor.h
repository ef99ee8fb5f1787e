// The bearer-token check on TLS listeners, done by gRPC itself as soon as a call's headers have
// arrived, before a byte of its request is read: a call without the token costs the server its
// headers, not the up to --max-call-bytes its message may hold (a peer that sent 63 MiB of each
// of many calls and withheld their last byte used to hold that much memory for as long as it
// liked). gRPC runs it only for secure credentials, so plaintext listeners (loopback TCP, unix
// sockets) keep the check where each call starts (call_gate.h), which also runs here, after it.
//
// What it cannot tell the access log is the peer's address: gRPC gives it the connection's TLS
// identity only (the client certificate's names under mutual TLS), so its lines say `peer=tls`,
// and refusals are counted together per certificate and reason (refusal_log.h: one line per
// 10 s at most, the next counting the calls between).
#pragma once

#include <memory>

#include "absl/strings/string_view.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "service/rpc/accepted_tokens.h"
#include "service/rpc/refusal_log.h"

namespace cnp::rpc {

class BearerTokenProcessor final : public grpc::AuthMetadataProcessor {
 public:
  // `tokens` must require a token (without one there is nothing to check).
  BearerTokenProcessor(std::shared_ptr<const AcceptedTokens> tokens, RefusalLog& refusals);

  // A comparison and at most one access-log line: cheap enough for gRPC's own thread, so the
  // call's headers are judged before gRPC goes on to read its message.
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

  // The methods that answer without a token: the health service, which load balancers call
  // and which reveals nothing the public API does not (call_gate.h never sees it). Reflection
  // needs the token: each of its streams holds a thread of gRPC's (rpc_server.cc).
  static bool NeedsNoToken(absl::string_view path);

 private:
  const std::shared_ptr<const AcceptedTokens> tokens_;
  RefusalLog& refusals_;
};

}  // namespace cnp::rpc
