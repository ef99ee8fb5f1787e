// The CouchDB error id ("timeout", "too_large", ...) for a failure of the service rather than of
// a function, one mapping for both sides of the Session stream: cnp-server answers a command it
// could not run with ["error",<id>,..] (query_protocol.cc), and cnp-adapter answers a line the
// service did not (its stream broke, or refused it) the same way.
//
// CouchDB treats every id alike (the request fails with a 500 {"error":id,"reason":..}; a map or
// reduce keeps its query server, a ddoc call stops it), so the id is for the reader: it must say
// what went wrong, and so which setting or remedy helps.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace cnp::couchdb {

// "too_large" for a call refused for one of the server's per-call limits (common/call_limit.h's
// mark, CallLimitOf, whatever its code: a line or an answer past --max-call-bytes cannot be sent
// again); "timeout" for DEADLINE_EXCEEDED; "overloaded" for any other RESOURCE_EXHAUSTED (every
// worker busy and the queue full, or --max-grpc-memory cancelling streams: it passes);
// "unavailable" for UNAVAILABLE; "internal_error" for anything else.
std::string_view InfrastructureErrorId(const absl::Status& status);

}  // namespace cnp::couchdb
