// gRPC's own log lines in cnp and cnp-adapter. gRPC writes an ERROR line for each header it
// cannot parse: behind nginx, a replica that is down is a 502 page whose headers are not gRPC's,
// and every call made 3 to 21 such lines before the client's own message, which already says
// what happened ("a proxy ... answered 502"). cnp-adapter's stderr is CouchDB's log, where a
// line per call is a flood. So each of gRPC's source lines speaks an error at most once a
// minute, saying how many were left out since its last; what is written is escaped to one line.
#pragma once

#include "absl/strings/string_view.h"

namespace cnp {

// From now on gRPC's lines go to stderr as "PROGRAM: grpc SEVERITY FILE:LINE: MESSAGE", the
// errors of each FILE:LINE at most once a minute (an assertion's, which comes before gRPC
// aborts, always; info and debug lines, which come only when asked for, always).
void RouteGrpcLogToStderr(absl::string_view program);

}  // namespace cnp
