#include "common/socket_trust.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/default_target.h"
#include "common/socket_directory.h"
#include "common/system_user.h"

namespace cnp {
namespace {

// What to write after --server-user= to trust `uid`.
std::string FlagValue(uid_t uid) { return UserName(uid).value_or(absl::StrCat(uid)); }

std::string GroupName(gid_t gid) {
  const struct group* group = ::getgrgid(gid);
  return group != nullptr ? std::string(group->gr_name) : absl::StrCat(gid);
}

// Why this user may not connect to `socket_path` (connecting needs write permission on the
// socket and search permission on its directory), `blocking` (the socket or its directory,
// of stat `st`) keeping it out, and what lets it: a client refused there heard only that no
// server answers, and was told to start one (an operator's trial: CouchDB's user not yet in
// the socket's group).
absl::Status NotAllowedToConnect(const std::string& socket_path, const std::string& blocking,
                                 const struct stat& st) {
  const uid_t me = ::geteuid();
  const std::string user = FlagValue(me);
  const std::string group = GroupName(st.st_gid);
  const bool directory = S_ISDIR(st.st_mode);
  const mode_t group_bit = directory ? S_IXGRP : S_IWGRP;
  std::string fix;
  if ((st.st_mode & group_bit) != 0 && st.st_gid != 0) {
    fix = absl::StrCat("this user is not in its group ", group, ": add it (usermod -aG ", group,
                       " ", user, "), then start this program in a new login (for CouchDB, "
                       "restart CouchDB), where the new group applies");
  } else if (directory) {
    // A directory that exists keeps its mode whatever the server's flags.
    fix = absl::StrCat("let a group this user is in search it (chgrp GROUP ", blocking,
                       " && chmod 0750 ", blocking, "), or remove it so that cnp-server started "
                       "with --socket-group=GROUP makes it 0750 (under systemd, "
                       "RuntimeDirectoryMode=0750 or the .socket unit's DirectoryMode=0750, "
                       "with SocketGroup=GROUP)");
  } else {
    fix = absl::StrCat("start cnp-server with --socket-group=GROUP (socket-group: in its config "
                       "file; under systemd, SocketGroup= and SocketMode=0660 in "
                       "cnp-server.socket) for a group this user is in, or run this program as ",
                       FlagValue(st.st_uid));
  }
  return absl::FailedPreconditionError(absl::StrFormat(
      "cnp-server's socket %s does not let this user (%s) connect: %s has mode %04o, owner %s, "
      "group %s; %s",
      socket_path, DescribeUser(me), blocking, st.st_mode & 07777, FlagValue(st.st_uid), group,
      fix));
}

}  // namespace

absl::StatusOr<SocketTrust> SocketTrust::WithServerUser(const std::string& server_user) {
  if (server_user.empty()) return WithServerUid(std::nullopt);
  absl::StatusOr<uid_t> uid = ResolveUser(server_user, "server-user");
  if (!uid.ok()) return uid.status();
  return WithServerUid(*uid);
}

SocketTrust SocketTrust::WithServerUid(std::optional<uid_t> server_uid) {
  return SocketTrust(server_uid, DefaultRuntimeDir());
}

SocketTrust::SocketTrust(std::optional<uid_t> server_uid, std::string own_dir)
    : server_uid_(server_uid), own_dir_(std::move(own_dir)) {}

bool SocketTrust::IsOwnDir(const struct stat& dir) const {
  // Compared as files, not as text: "/tmp//cnp-0/" is the same directory.
  struct stat own {};
  return S_ISDIR(dir.st_mode) && ::lstat(own_dir_.c_str(), &own) == 0 &&
         own.st_dev == dir.st_dev && own.st_ino == dir.st_ino;
}

bool SocketTrust::Trusts(uid_t uid) const {
  return uid == ::geteuid() || uid == 0 || (server_uid_.has_value() && uid == *server_uid_);
}

std::string SocketTrust::TrustedUsers() const {
  std::string users = absl::StrCat("this user (", DescribeUser(::geteuid()), ")");
  if (!server_uid_.has_value()) return absl::StrCat(users, " or root");
  return absl::StrCat(users, ", root or the --server-user (", DescribeUser(*server_uid_), ")");
}

std::string SocketTrust::Advice(uid_t owner) const {
  return absl::StrCat("whoever owns it could have put their own server there, which would "
                      "receive everything sent to cnp-server; if cnp-server runs as that user, "
                      "trust it with --server-user=",
                      FlagValue(owner), ", else do not use this socket");
}

absl::Status SocketTrust::CheckSocket(const std::string& socket_path) const {
  const std::string dir = SocketDirectory(socket_path);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return absl::UnavailableError(absl::StrCat("the socket directory ", dir, " does not exist"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("cannot check the socket directory ", dir, ": ", std::strerror(errno)));
  }
  const uid_t me = ::geteuid();
  if (IsOwnDir(st) && st.st_uid != me) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the socket directory ", dir, " belongs to ", DescribeUser(st.st_uid), ", not to this user (",
        DescribeUser(me), "): it is this user's default socket directory, which no flag lets "
        "another user own; someone else made it, and could be listening there in cnp-server's "
        "place: have it removed, or use a --target elsewhere"));
  }
  if (S_ISDIR(st.st_mode) && !Trusts(st.st_uid)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the socket directory ", dir, " belongs to ", DescribeUser(st.st_uid), ", not to ",
        TrustedUsers(), ": ", Advice(st.st_uid)));
  }
  // Not a symlink, and writable by no one but its owner.
  if (absl::Status s = CheckSocketDirectory(dir, DirectoryOwner::kAnyone); !s.ok()) return s;
  const struct stat dir_st = st;
  if (::lstat(socket_path.c_str(), &st) != 0) {
    // No socket yet: only a trusted user can make one in this directory.
    if (errno == ENOENT) return absl::OkStatus();
    // The directory keeps this user out (0750 with the --socket-group, whose members reach the
    // socket through it): the same advice as for the socket's own mode.
    if (errno == EACCES) return NotAllowedToConnect(socket_path, dir, dir_st);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot check the socket ", socket_path, ": ", std::strerror(errno)));
  }
  if (!Trusts(st.st_uid)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the socket ", socket_path, " belongs to ", DescribeUser(st.st_uid), ", not to ",
        TrustedUsers(), ": ", Advice(st.st_uid)));
  }
  if (S_ISSOCK(st.st_mode) && ::faccessat(AT_FDCWD, socket_path.c_str(), W_OK, AT_EACCESS) != 0 &&
      errno == EACCES) {
    return NotAllowedToConnect(socket_path, socket_path, st);
  }
  return absl::OkStatus();
}

absl::Status SocketTrust::CheckPeer(uid_t peer_uid, const std::string& socket_path) const {
  if (Trusts(peer_uid)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the server listening on ", socket_path, " runs as ", DescribeUser(peer_uid), ", not as ",
      TrustedUsers(), ", so nothing is handed to it; if cnp-server runs as that user, trust it "
      "with --server-user=", FlagValue(peer_uid)));
}

}  // namespace cnp
