// Running part of a test as another user (root tests playing `nobody`): in a forked child that
// drops every group and takes the user's ids before running the part.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>

namespace cnp::testing {

// `body`'s return value as the exit status of a child running as `uid`:`gid` with no
// supplementary group; 125 when the child could not become that user, -1 when no child ran.
// Only async-signal-safe work belongs in `body` in a threaded test; the gtest bodies here are
// single-threaded.
int ExitStatusAsUser(uid_t uid, gid_t gid, const std::function<int()>& body);

// A new directory /tmp/PREFIX.XXXXXX, mode 0755, that such a user can reach: the test's own
// directory is below root's 0700 home, which another user cannot search. Empty if it could
// not be made.
std::string MakeReachableTempDir(const std::string& prefix);

}  // namespace cnp::testing
