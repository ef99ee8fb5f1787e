#include "service/rpc/call_gate.h"

#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/security/auth_context.h"
#include "service/rpc/bearer_authorization.h"
#include "service/rpc/peer_connections.h"

namespace cnp::rpc {
namespace {

bool IsUnixPeer(const std::string& peer) { return absl::StartsWith(peer, "unix:"); }

}  // namespace

CallGate::CallGate(std::shared_ptr<const AcceptedTokens> tokens, RefusalLog& refusals,
                   ConnectionProbation* probation)
    : tokens_(std::move(tokens)), refusals_(&refusals), probation_(probation) {}

absl::Status CallGate::Admit(const grpc::ServerContext& context, absl::string_view method) const {
  absl::Status status = CheckToken(context, method);
  if (status.ok() && probation_ != nullptr) probation_->Admitted(context);
  return status;
}

absl::Status CallGate::CheckToken(const grpc::ServerContext& context,
                                  absl::string_view method) const {
  if (!tokens_->Required()) return absl::OkStatus();
  const std::string peer = context.peer();
  if (IsUnixPeer(peer)) return absl::OkStatus();
  const TokenCheck check = tokens_->Check(AuthorizationHeader(context));
  if (check == TokenCheck::kAccepted) return absl::OkStatus();
  LogRefusal(context, peer, method, RefusalReason(check));
  return TokenRefusal(check);
}

absl::Status CallGate::Readmit(const grpc::ServerContext& context, absl::string_view method,
                               uint64_t& checked) const {
  const uint64_t generation = tokens_->Generation();
  if (generation == checked) return absl::OkStatus();
  checked = generation;
  if (!tokens_->Required()) return absl::OkStatus();
  const std::string peer = context.peer();
  if (IsUnixPeer(peer)) return absl::OkStatus();
  if (tokens_->Check(AuthorizationHeader(context)) == TokenCheck::kAccepted) {
    return absl::OkStatus();
  }
  LogRefusal(context, peer, method, "bearer token removed");
  return absl::UnauthenticatedError(absl::StrCat(
      "the bearer token this ", method,
      " stream was opened with is no longer accepted: the server read its --auth-token-file "
      "again without it. Open a new stream with a token the server accepts now"));
}

std::optional<absl::string_view> CallGate::AuthorizationHeader(
    const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto found = metadata.find("authorization");
  if (found == metadata.end()) return std::nullopt;
  return absl::string_view(found->second.data(), found->second.size());
}

void CallGate::LogRefusal(const grpc::ServerContext& context, const std::string& peer,
                          absl::string_view method, absl::string_view reason) const {
  const std::string cert = PeerCertificate(context);
  refusals_->Refused("refused",
                     absl::StrCat(PeerCountKeyOfUri(peer), " cert=", cert, " call=", method), peer,
                     reason, {{"cert", cert}, {"call", method}, {"code", "UNAUTHENTICATED"}},
                     "calls");
}

std::string CallGate::PeerIdentity(const grpc::ServerContext& context) {
  std::string identity = context.peer();
  if (std::string names = PeerCertificate(context); !names.empty()) {
    absl::StrAppend(&identity, " cert=", names);
  }
  return identity;
}

std::string CallGate::PeerCertificate(const grpc::ServerContext& context) {
  return CertificateNames(context.auth_context().get());
}

}  // namespace cnp::rpc
