#include "service/session/direct_socket_path.h"

namespace cnp::session {

std::string DirectSocketPath(const std::string& grpc_socket_path) {
  return grpc_socket_path + ".direct";
}

}  // namespace cnp::session
