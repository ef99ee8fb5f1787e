// How failures become gRPC statuses: absl codes map one to one. (A worker's whole-task Failure
// becomes an absl::Status in service/calls/failure_status.h.)
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace cnp::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace cnp::rpc
