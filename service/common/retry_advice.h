// Whether a client may retry a failed call, as the service tells it. cnp's clients retry
// UNAVAILABLE on another replica (client/lib/service_config.h): right when a replica went away
// or is shutting down, wrong when a worker crashed on the request itself, which would crash a
// worker wherever the request went (three attempts, three crashes). A status marked here is
// answered with gRPC's trailer "grpc-retry-pushback-ms: -1" (service/rpc/status_mapping.h),
// which tells a gRPC client's retry policy not to retry it.
#pragma once

#include "absl/status/status.h"

namespace cnp {

absl::Status NotRetryable(absl::Status status);
bool IsNotRetryable(const absl::Status& status);

}  // namespace cnp
