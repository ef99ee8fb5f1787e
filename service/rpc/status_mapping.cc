#include "service/rpc/status_mapping.h"

#include <string>

namespace cnp::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FailureToStatus(const worker::v1::Failure& failure) {
  using F = worker::v1::Failure;
  const std::string& m = failure.message();
  switch (failure.code()) {
    case F::BAD_NAME:
    case F::BAD_INPUT: return absl::InvalidArgumentError(m);
    case F::NOT_FOUND: return absl::NotFoundError(m);
    case F::PERMISSION_DENIED: return absl::PermissionDeniedError(m);
    case F::VERSION_MISMATCH: return absl::FailedPreconditionError(m);
    case F::INTERNAL:
    default: return absl::InternalError(m);
  }
}

}  // namespace cnp::rpc
