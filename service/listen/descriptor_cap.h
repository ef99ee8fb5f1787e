// The descriptor cap of the server's listeners: a connection accepted onto a descriptor
// numbered at or above it is closed at once, so that a flood of connections (from anyone who
// may connect) never takes the descriptors that calls in flight, workers, their pipes, log
// files and uploads need. The gRPC acceptor (service/rpc/connection_acceptor.h) and the
// direct-session listener (service/session/session_listener.h) share it.
#pragma once

namespace cnp::listen {

// The cap for the current RLIMIT_NOFILE: a headroom below the soft limit is kept for
// everything that is not a connection.
int DescriptorCapForLimit();

}  // namespace cnp::listen
