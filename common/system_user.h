// Users of this host as cnp's flags name them: cnp-server's --allow-uid and the clients'
// --server-user take a user name or a uid, and messages show both.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cnp {

// A user name or a uid ("cnp", "998") as a uid; INVALID_ARGUMENT naming --`flag` otherwise.
absl::StatusOr<uid_t> ResolveUser(const std::string& user, absl::string_view flag);

// The user's name; nothing for a uid the user database does not know.
std::optional<std::string> UserName(uid_t uid);

// "uid 65534 (nobody)", or "uid 4242" for a uid with no name.
std::string DescribeUser(uid_t uid);

}  // namespace cnp
