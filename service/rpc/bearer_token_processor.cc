#include "service/rpc/bearer_token_processor.h"

#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "service/rpc/bearer_authorization.h"

namespace cnp::rpc {
namespace {

absl::string_view View(const grpc::string_ref& s) { return absl::string_view(s.data(), s.size()); }

// The verified client certificate's names under mutual TLS, else empty.
std::string CertificateNames(const grpc::AuthContext* context) {
  if (context == nullptr || !context->IsPeerAuthenticated()) return "";
  std::vector<std::string> names;
  for (const grpc::string_ref& name : context->GetPeerIdentity()) names.emplace_back(View(name));
  return absl::StrJoin(names, ",");
}

// "/cnp.v1.Functions/Map" -> "Map", for the access log as CallGate names calls.
absl::string_view MethodName(absl::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == absl::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace

BearerTokenProcessor::BearerTokenProcessor(std::string token, RefusalLog& refusals)
    : token_(std::move(token)), refusals_(refusals) {}

bool BearerTokenProcessor::NeedsNoToken(absl::string_view path) {
  return absl::StartsWith(path, "/grpc.health.v1.Health/") ||
         absl::StartsWith(path, "/grpc.reflection.v1alpha.ServerReflection/") ||
         absl::StartsWith(path, "/grpc.reflection.v1.ServerReflection/");
}

grpc::Status BearerTokenProcessor::Process(const InputMetadata& auth_metadata,
                                           grpc::AuthContext* context, OutputMetadata*,
                                           OutputMetadata*) {
  absl::string_view path;
  if (auto found = auth_metadata.find(":path"); found != auth_metadata.end()) {
    path = View(found->second);
  }
  if (NeedsNoToken(path)) return grpc::Status::OK;
  std::optional<absl::string_view> header;
  if (auto found = auth_metadata.find("authorization"); found != auth_metadata.end()) {
    header = View(found->second);
  }
  const TokenCheck check = CheckBearerAuthorization(header, token_);
  // Left in the call's metadata when accepted: CallGate checks it again where the call starts.
  if (check == TokenCheck::kAccepted) return grpc::Status::OK;
  // As CallGate logs it, with what gRPC tells here: no address, and when the check ran.
  const std::string cert = CertificateNames(context);
  const absl::string_view call = path.empty() ? "-" : MethodName(path);
  refusals_.Refused("refused", absl::StrCat("tls cert=", cert, " call=", call), "tls",
                    RefusalReason(check),
                    {{"cert", cert},
                     {"call", call},
                     {"code", "UNAUTHENTICATED"},
                     {"checked", "before the request was read"}},
                    "calls");
  const absl::Status refusal = TokenRefusal(check);
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(refusal.message()));
}

}  // namespace cnp::rpc
