#include "service/rpc/status_mapping.h"

#include <string>

#include "service/common/retry_advice.h"

namespace cnp::rpc {

namespace {

// Carried from ToGrpcStatus to WithRetryAdvice in the status's details, which WithRetryAdvice
// empties again: never sent.
constexpr char kNotRetryableMark[] = "cnp:not-retryable";

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()),
                      IsNotRetryable(status) ? kNotRetryableMark : "");
}

grpc::Status WithRetryAdvice(grpc::Status status, grpc::ServerContext& context) {
  if (status.error_details() != kNotRetryableMark) return status;
  context.AddTrailingMetadata("grpc-retry-pushback-ms", "-1");
  return grpc::Status(status.error_code(), status.error_message());
}

}  // namespace cnp::rpc
