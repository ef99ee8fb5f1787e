#include "service/rpc/bearer_token_processor.h"

#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "google/protobuf/descriptor.h"
#include "service/metrics/service_metrics.h"
#include "service/rpc/bearer_authorization.h"

namespace cnp::rpc {
namespace {

absl::string_view View(const grpc::string_ref& s) { return absl::string_view(s.data(), s.size()); }

// "/cnp.v1.Functions/Map" -> Map's descriptor, for the access log as CallGate names calls and
// for the metrics. The path is the client's to choose and is checked before gRPC looks the
// method up: any other path is "unknown" (null), so a tokenless peer inventing a new path per
// call neither gets a line of its own each time (refusals are counted per method) nor writes
// its text into the log.
const google::protobuf::MethodDescriptor* FunctionsMethod(absl::string_view path) {
  static const google::protobuf::ServiceDescriptor* const functions =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          v1::Functions::service_full_name());
  absl::string_view name = path;
  if (!absl::ConsumePrefix(&name, "/") || !absl::ConsumePrefix(&name, functions->full_name()) ||
      !absl::ConsumePrefix(&name, "/")) {
    return nullptr;
  }
  return functions->FindMethodByName(std::string(name));
}

}  // namespace

BearerTokenProcessor::BearerTokenProcessor(std::shared_ptr<const AcceptedTokens> tokens,
                                           RefusalLog& refusals)
    : tokens_(std::move(tokens)), refusals_(refusals) {}

bool BearerTokenProcessor::NeedsNoToken(absl::string_view path) {
  return absl::StartsWith(path, "/grpc.health.v1.Health/");
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
  const TokenCheck check = tokens_->Check(header);
  // Left in the call's metadata when accepted: CallGate checks it again where the call starts.
  if (check == TokenCheck::kAccepted) return grpc::Status::OK;
  // As CallGate logs it, with what gRPC tells here: no address, and when the check ran.
  const std::string cert = CertificateNames(context);
  const google::protobuf::MethodDescriptor* method = FunctionsMethod(path);
  const absl::string_view call = path.empty()      ? absl::string_view("-")
                                 : method == nullptr ? absl::string_view("unknown")
                                                     : absl::string_view(method->name());
  refusals_.Refused("refused", absl::StrCat("tls cert=", cert, " call=", call), "tls",
                    RefusalReason(check),
                    {{"cert", cert},
                     {"call", call},
                     {"code", "UNAUTHENTICATED"},
                     {"checked", "before the request was read"}},
                    "calls");
  // No handler runs, which is where a unary call is counted (on a plaintext listener, whose
  // token check is the handler's, it is): a token refused over TLS was in the access log only.
  if (method != nullptr && !method->client_streaming() && !method->server_streaming()) {
    metrics::CallRefusedUnread(method->name(), static_cast<int>(grpc::StatusCode::UNAUTHENTICATED));
  }
  const absl::Status refusal = TokenRefusal(check);
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(refusal.message()));
}

}  // namespace cnp::rpc
