// The directory of a unix socket decides who can replace the socket: anyone who may write there
// can put their own server in its place (and receive every document sent to it). Shared by
// cnp-server (which creates sockets), cnp-adapter and cnp (which connect to them; who may own
// the directory they connect into is common/socket_trust.h's rule).
#pragma once

#include <string>

#include "absl/status/status.h"

namespace cnp {

enum class DirectoryOwner {
  kMe,      // owned by this process's effective user: where we create sockets or start a server
  kAnyone,  // the owner is checked by the caller (socket_trust.h); still writable by no one else
};

// OK when `dir` is a real directory (not a symlink), owned as `owner` says, and writable by
// neither its group nor others. The error says what is wrong and how to fix it.
absl::Status CheckSocketDirectory(const std::string& dir, DirectoryOwner owner);

// The directory part of a socket path ("/tmp/cnp-0" for "/tmp/cnp-0/cnp.sock").
std::string SocketDirectory(const std::string& socket_path);

}  // namespace cnp
