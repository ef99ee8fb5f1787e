// The one reading of a call's "authorization" header, for both places the bearer token is
// checked (bearer_token_processor.h on TLS listeners, call_gate.h on plaintext ones). RFC 6750
// credentials are "Bearer TOKEN", the scheme's case not mattering (RFC 7235 section 2.1:
// "bearer", "BEARER" are the same scheme), then one or more spaces, then the token, compared
// exactly and in constant time. Also how both name a refused caller in the access log.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "grpcpp/security/auth_context.h"

namespace cnp::rpc {

enum class TokenCheck {
  kAccepted,
  kMissing,     // no authorization header
  kNotBearer,   // a header without the Bearer scheme (another scheme, or the token alone)
  kWrongToken,  // Bearer, and another token
};

// `header` is the authorization header's value, nullopt when the call has none; `tokens` the
// server's (not empty), any of which is accepted. Each is compared in full, so that the time
// taken does not tell which one came nearest either.
TokenCheck CheckBearerAuthorization(std::optional<absl::string_view> header,
                                    absl::Span<const std::string> tokens);

// The access log's reason= for a refusal: "no bearer token", "not a bearer token", "wrong
// bearer token".
absl::string_view RefusalReason(TokenCheck check);

// The UNAUTHENTICATED status a refused call is answered with, saying what the header must be
// and how each client sets it.
absl::Status TokenRefusal(TokenCheck check);

// Who a refused call's peer is, as both checks write it to the access log: the verified client
// certificate's names under mutual TLS, comma-separated, else empty.
std::string CertificateNames(const grpc::AuthContext* context);

// Compares without stopping at the first difference, so that the time taken does not tell an
// attacker how much of a guessed token was right.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace cnp::rpc
