#include "service/rpc/call_gate.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/security/auth_context.h"

namespace cnp::rpc {
namespace {

bool IsUnixPeer(const std::string& peer) { return absl::StartsWith(peer, "unix:"); }

}  // namespace

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

CallGate::CallGate(std::string token, const AccessLog& log, ConnectionProbation* probation)
    : expected_(token.empty() ? "" : absl::StrCat("Bearer ", token)), log_(log),
      probation_(probation) {}

absl::Status CallGate::Admit(const grpc::ServerContext& context, absl::string_view method) const {
  absl::Status status = CheckToken(context, method);
  if (status.ok() && probation_ != nullptr) probation_->Admitted(context);
  return status;
}

absl::Status CallGate::CheckToken(const grpc::ServerContext& context,
                                  absl::string_view method) const {
  if (expected_.empty()) return absl::OkStatus();
  const std::string peer = context.peer();
  if (IsUnixPeer(peer)) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  auto found = metadata.find("authorization");
  absl::string_view reason;
  if (found == metadata.end()) {
    reason = "no bearer token";
  } else if (!ConstantTimeEquals(absl::string_view(found->second.data(), found->second.size()),
                                 expected_)) {
    reason = "wrong bearer token";
  } else {
    return absl::OkStatus();
  }
  log_.Write("refused", peer,
             {{"cert", PeerCertificate(context)},
              {"call", method},
              {"code", "UNAUTHENTICATED"},
              {"reason", reason}});
  return absl::UnauthenticatedError(absl::StrCat(
      "this server requires a bearer token (", reason,
      "); pass --auth-token-file=FILE holding the token the server was given"));
}

std::string CallGate::PeerIdentity(const grpc::ServerContext& context) {
  std::string identity = context.peer();
  if (std::string names = PeerCertificate(context); !names.empty()) {
    absl::StrAppend(&identity, " cert=", names);
  }
  return identity;
}

std::string CallGate::PeerCertificate(const grpc::ServerContext& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return "";
  std::vector<std::string> names;
  for (const grpc::string_ref& name : auth->GetPeerIdentity()) {
    names.emplace_back(name.data(), name.size());
  }
  return absl::StrJoin(names, ",");
}

}  // namespace cnp::rpc
