// How failures become gRPC statuses: absl codes map one to one. (A worker's whole-task Failure
// becomes an absl::Status in service/calls/failure_status.h.)
#pragma once

#include "absl/status/status.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"

namespace cnp::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status);

// What a status is marked with keeps through ToGrpcStatus; this turns it into trailers on
// `context`. Every handler's final status passes through it.
//   - NotRetryable (common/retry_advice.h): gRPC's "grpc-retry-pushback-ms: -1", which
//     tells a client's retry policy not to send the call again.
//   - WithCallLimit (common/call_limit.h): "cnp-call-limit: <kind> <limit>", which the client
//     library reads back into the status it returns.
grpc::Status WithStatusTrailers(grpc::Status status, grpc::ServerContext& context);

}  // namespace cnp::rpc
