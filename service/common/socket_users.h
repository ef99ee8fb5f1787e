// Who may connect to the server's unix sockets, the gRPC socket and the direct-session socket
// alike: the server's own user, root (who could take either socket anyway), and the users
// --allow-uid names. Both listeners check a connection's SO_PEERCRED uid against this one set.
#pragma once

#include <sys/types.h>

#include <set>
#include <vector>

namespace cnp {

std::set<uid_t> UnixSocketUsers(const std::vector<uid_t>& allowed_uids);

}  // namespace cnp
