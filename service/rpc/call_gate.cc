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
  const auto& metadata = context.client_metadata();
  std::optional<absl::string_view> header;
  if (auto found = metadata.find("authorization"); found != metadata.end()) {
    header = absl::string_view(found->second.data(), found->second.size());
  }
  const TokenCheck check = tokens_->Check(header);
  if (check == TokenCheck::kAccepted) return absl::OkStatus();
  const std::string cert = PeerCertificate(context);
  refusals_->Refused("refused", absl::StrCat(PeerCountKeyOfUri(peer), " cert=", cert, " call=", method),
                     peer,
                     RefusalReason(check),
                     {{"cert", cert}, {"call", method}, {"code", "UNAUTHENTICATED"}}, "calls");
  return TokenRefusal(check);
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
