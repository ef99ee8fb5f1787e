// How failures become gRPC statuses: absl codes map one to one. (A worker's whole-task Failure
// becomes an absl::Status in service/calls/failure_status.h.)
#pragma once

#include "absl/status/status.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"

namespace cnp::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status);

// A status marked NotRetryable (service/common/retry_advice.h) keeps that mark through
// ToGrpcStatus; this turns it into gRPC's trailer "grpc-retry-pushback-ms: -1" on `context`,
// which tells a client's retry policy not to send the call again. Every handler's final status
// passes through it.
grpc::Status WithRetryAdvice(grpc::Status status, grpc::ServerContext& context);

}  // namespace cnp::rpc
