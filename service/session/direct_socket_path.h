// Where the direct-session socket (session.proto) sits: next to the gRPC unix socket, so that an
// adapter that knows the one finds the other, and the server listens where adapters look.
#pragma once

#include <string>

namespace cnp::session {

// The direct-session socket that sits next to the gRPC unix socket `grpc_socket_path`.
std::string DirectSocketPath(const std::string& grpc_socket_path);

}  // namespace cnp::session
