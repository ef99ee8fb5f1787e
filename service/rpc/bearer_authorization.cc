#include "service/rpc/bearer_authorization.h"

#include <algorithm>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace cnp::rpc {

std::string CertificateNames(const grpc::AuthContext* context) {
  if (context == nullptr || !context->IsPeerAuthenticated()) return "";
  std::vector<std::string> names;
  for (const grpc::string_ref& name : context->GetPeerIdentity()) {
    names.emplace_back(name.data(), name.size());
  }
  return absl::StrJoin(names, ",");
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Every byte of the longer string is looked at, whatever the inputs.
  const size_t n = std::max(a.size(), b.size());
  unsigned char difference = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0;
    const unsigned char y = i < b.size() ? b[i] : 0;
    difference |= x ^ y;
  }
  return difference == 0;
}

TokenCheck CheckBearerAuthorization(std::optional<absl::string_view> header,
                                    absl::Span<const std::string> tokens) {
  if (!header.has_value()) return TokenCheck::kMissing;
  constexpr absl::string_view kScheme = "bearer";
  absl::string_view credentials = *header;
  if (credentials.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(credentials.substr(0, kScheme.size()), kScheme) ||
      credentials[kScheme.size()] != ' ') {
    return TokenCheck::kNotBearer;
  }
  credentials.remove_prefix(kScheme.size());
  while (absl::ConsumePrefix(&credentials, " ")) {
  }
  bool accepted = false;
  for (const std::string& token : tokens) accepted |= ConstantTimeEquals(credentials, token);
  return accepted ? TokenCheck::kAccepted : TokenCheck::kWrongToken;
}

absl::string_view RefusalReason(TokenCheck check) {
  switch (check) {
    case TokenCheck::kAccepted:
      return "";
    case TokenCheck::kMissing:
      return "no bearer token";
    case TokenCheck::kNotBearer:
      return "not a bearer token";
    case TokenCheck::kWrongToken:
      return "wrong bearer token";
  }
  return "";
}

absl::Status TokenRefusal(TokenCheck check) {
  absl::string_view what;
  switch (check) {
    case TokenCheck::kAccepted:
      return absl::OkStatus();
    case TokenCheck::kMissing:
      what = "no authorization header";
      break;
    case TokenCheck::kNotBearer:
      what = "the authorization header must be `Bearer TOKEN`";
      break;
    case TokenCheck::kWrongToken:
      what = "wrong bearer token";
      break;
  }
  return absl::UnauthenticatedError(absl::StrCat(
      "this server requires a bearer token (", what, "): send the header `authorization: "
      "Bearer TOKEN` with the token the server was given (cnp and cnp-adapter: "
      "--auth-token-file=FILE; the C++ client library: ChannelSecurity::auth_token_file)"));
}

}  // namespace cnp::rpc
