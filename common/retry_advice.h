// Whether a client may send a failed call again, as the service tells it. cnp's clients retry
// UNAVAILABLE on another replica (client/lib/service_config.h): right when a replica went away
// or is shutting down, wrong when a worker crashed on the request itself, which would crash a
// worker wherever the request went (three attempts, three crashes).
//
// On the service's side a status marked here is answered with gRPC's trailer
// "grpc-retry-pushback-ms: -1" (service/rpc/status_mapping.h), which tells a gRPC client's retry
// policy not to retry it. The client library (client/lib/cnp_client.h) reads that trailer back
// into the same mark, so that IsNotRetryable answers on either side: a caller that retries by
// itself (RetryPolicy::kNone) tells "this request crashes workers" from "a replica went away".
#pragma once

#include "absl/status/status.h"

namespace cnp {

// The trailer, and the value that means "never": gRPC reads any negative value so.
inline constexpr char kRetryPushbackTrailer[] = "grpc-retry-pushback-ms";
inline constexpr char kNeverRetry[] = "-1";

absl::Status NotRetryable(absl::Status status);
bool IsNotRetryable(const absl::Status& status);

// The server is stopping and cut this work for it (an UNAVAILABLE): nothing about the request,
// which another server would serve. A CouchDB Session stream ends with it rather than answer
// the command with an error line, so that its adapter sends the command again on another
// stream, as when a stream breaks (service/rpc/query_session_handler.h). A type, not the
// message's words: the message is for people.
absl::Status ServerStopping(absl::Status status);
bool IsServerStopping(const absl::Status& status);

}  // namespace cnp
