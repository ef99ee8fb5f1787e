// gRPC's own log lines (a TLS handshake it rejected, a connection it dropped) in the service's
// log: in its format (one JSON object per line under --log-format=json), at its levels, and at
// most so many a second. Left to gRPC, each went to stderr in gRPC's own text, one per failed
// handshake: anyone who could reach a TLS listener wrote 3,000 lines a second into the log.
#pragma once

namespace cnp {

// Routes gRPC's log through the service's (LogEvent). Call once, before gRPC starts.
void RouteGrpcLogThroughServiceLog();

}  // namespace cnp
