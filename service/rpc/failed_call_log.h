// A log line for each unary call that fails, with its code and message; the call's RPC and peer
// come with the call's log scope (call_executor.h). Failures were in the metrics alone
// (cnp_calls_total by code), so a caller that probed for functions the allow-list refuses, or a
// service whose every call failed, left no line saying who or why. A refusal by the allow-list
// and a failure of the server's own (INTERNAL) are warnings; a caller's mistake (an unknown
// function, a bad document, an overloaded server) is INFO. A cancelled call is the caller's own
// doing, one refused its token has its access-log line already, and a worker's crash or a
// deadline that passed has the call's own line, naming its function (service/calls). At most 20 lines and 64 KiB
// a second, whoever calls: a client failing in a loop does not make the log its bottleneck.
#pragma once

#include "grpcpp/support/status.h"

namespace cnp::rpc {

// From the call's coroutine, in its log scope.
void LogFailedCall(const grpc::Status& status);

}  // namespace cnp::rpc
