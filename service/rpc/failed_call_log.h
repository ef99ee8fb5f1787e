// A log line for each unary call that fails, with its code and message; the call's RPC and peer
// come with the call's log scope (call_executor.h). Failures were in the metrics alone
// (cnp_calls_total by code), so a caller that probed for functions the allow-list refuses, or a
// service whose every call failed, left no line saying who or why. A refusal by the allow-list
// and a failure of the server's own (INTERNAL) are warnings; a caller's mistake (an unknown
// function, a bad document, an overloaded server) is INFO. Not logged: a cancelled call (the
// caller's own doing), one refused its token (its access-log line says it), a worker's crash or
// a deadline that passed (the call's own line names its function: service/calls), and the health
// service's answers (a probe of an unknown service is an answer, not a failure). Each level has
// a budget of its own, at most 20 lines and 64 KiB a second, whoever calls: a client failing in a
// loop does not make the log its bottleneck, nor keep the warnings out.
#pragma once

#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace cnp::rpc {

// From the call's coroutine, in its log scope; `rpc` as the call's scope names it.
void LogFailedCall(absl::string_view rpc, const grpc::Status& status);

}  // namespace cnp::rpc
