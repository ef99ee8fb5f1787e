// How failures become gRPC statuses: absl codes map one to one; a worker's whole-task Failure
// maps by its meaning.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"
#include "worker.pb.h"

namespace cnp::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FailureToStatus(const worker::v1::Failure& failure);

}  // namespace cnp::rpc
