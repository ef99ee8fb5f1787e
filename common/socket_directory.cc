#include "common/socket_directory.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cnp {

std::string SocketDirectory(const std::string& socket_path) {
  const size_t slash = socket_path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return socket_path.substr(0, slash);
}

absl::Status CheckSocketDirectory(const std::string& dir, DirectoryOwner owner) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot check the socket directory ", dir, ": ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the socket directory ", dir, " is not a directory (a symlink?); use a real directory"));
  }
  const uid_t me = ::geteuid();
  if (owner == DirectoryOwner::kMe && st.st_uid != me) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the socket directory %s belongs to uid %d, not to this user (uid %d): its owner could "
        "replace the socket; remove it or choose another directory",
        dir, st.st_uid, me));
  }
  if ((st.st_mode & 022) != 0) {
    // A directory every user may write to, with the sticky bit, may be one all users share
    // (/tmp), where closing it would break the host: the other way out is said first.
    if ((st.st_mode & S_ISVTX) != 0 && (st.st_mode & 002) != 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "the socket directory %s (mode %04o) is writable by every user: another could take "
          "the socket's name first; put the socket in a directory of your own (e.g. %s/cnp, "
          "mode 0700), or run chmod go-w %s if no one else needs to write there (never /tmp)",
          dir, st.st_mode & 07777, dir == "/" ? "" : dir, dir));
    }
    return absl::FailedPreconditionError(absl::StrFormat(
        "the socket directory %s has mode %04o: other users could replace the socket; run "
        "chmod go-w %s or choose another directory",
        dir, st.st_mode & 07777, dir));
  }
  return absl::OkStatus();
}

}  // namespace cnp
