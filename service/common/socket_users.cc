#include "service/common/socket_users.h"

#include <unistd.h>

namespace cnp {

std::set<uid_t> UnixSocketUsers(const std::vector<uid_t>& allowed_uids) {
  std::set<uid_t> users(allowed_uids.begin(), allowed_uids.end());
  users.insert(::geteuid());
  users.insert(0);
  return users;
}

}  // namespace cnp
