// Which unix-socket server a client may talk to. Whoever owns the socket's directory decides
// what listens there: another user who made /tmp/cnp-<uid> first, or any directory of theirs a
// --target names, could put a server of their own there and receive what the client sends
// (Upload's CouchDB credentials, documents, and the adapter's CouchDB pipes, with which it
// would approve every validate_doc_update). So the directory, the socket file and, where the
// client can see it (the direct-session socket, SO_PEERCRED), the server process must belong to
// this user, to root, or to the server's own user named with --server-user (a service that
// runs as a dedicated account, such as `cnp` under systemd). Shared by cnp, the client library
// and cnp-adapter.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cnp {

class SocketTrust {
 public:
  // Trusts this user, root and `server_user` (a name or uid, as given to --server-user; empty:
  // nobody else). INVALID_ARGUMENT when no such user exists.
  static absl::StatusOr<SocketTrust> WithServerUser(const std::string& server_user);
  // The same with the --server-user already resolved (none: nobody else).
  static SocketTrust WithServerUid(std::optional<uid_t> server_uid);

  // `own_dir`: this user's default directory (common/default_target.h), which only this user
  // may own, --server-user or not: it is where cnp looks without being told, so another user
  // who made it first must never be trusted there. Tests pass a directory of their own.
  SocketTrust(std::optional<uid_t> server_uid, std::string own_dir);

  // Whether a directory, socket or server process owned by `uid` may be trusted.
  bool Trusts(uid_t uid) const;

  // OK when `socket_path` may be connected to: its directory is a real directory owned by a
  // trusted user (this user only, for the default directory) and writable by neither group nor
  // others, and the socket, if it exists, belongs to a trusted user. FAILED_PRECONDITION
  // naming the path, the owner found and --server-user otherwise, and naming the group to join
  // or the flag to give when the socket's mode does not let this user connect. UNAVAILABLE when the
  // directory does not exist: nothing listens there, and connecting anyway would keep trying
  // while anyone might create it.
  absl::Status CheckSocket(const std::string& socket_path) const;

  // OK when `peer_uid`, the uid of the process that listens on `socket_path` (SO_PEERCRED), is
  // trusted; FAILED_PRECONDITION naming it and --server-user otherwise.
  absl::Status CheckPeer(uid_t peer_uid, const std::string& socket_path) const;

 private:
  // "this user (uid 1000), root or the --server-user (uid 998 (cnp))"
  std::string TrustedUsers() const;
  std::string Advice(uid_t owner) const;
  bool IsOwnDir(const struct stat& dir) const;

  std::optional<uid_t> server_uid_;
  std::string own_dir_;
};

}  // namespace cnp
