// Running part of a test as another user (root tests playing `nobody`): in a forked child that
// drops every group and takes the user's ids before running the part.
#pragma once

#include <sys/types.h>

#include <functional>

namespace cnp::testing {

// `body`'s return value as the exit status of a child running as `uid`:`gid` with no
// supplementary group; 125 when the child could not become that user, -1 when no child ran.
// Only async-signal-safe work belongs in `body` in a threaded test; the gtest bodies here are
// single-threaded.
int ExitStatusAsUser(uid_t uid, gid_t gid, const std::function<int()>& body);

}  // namespace cnp::testing
