#include "common/trusted_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/code_directory.h"
#include "common/code_ownership.h"

namespace cnp {
namespace {

absl::Status CannotCheck(const std::string& path, absl::string_view what,
                         absl::string_view why) {
  return absl::FailedPreconditionError(absl::StrCat("cannot check ", what, " ", path, ": ", why));
}

}  // namespace

absl::Status CheckTrustedFile(const std::string& path, const struct stat& st,
                              absl::string_view what, absl::string_view consequence) {
  const std::string named = absl::StrCat(what, " ", path);
  if (std::optional<OwnershipProblem> problem = OthersCanChange(path, st)) {
    // The rule's own fix for an owner speaks of code; a file is given to root instead.
    std::string fix = st.st_uid != 0 && st.st_uid != ::geteuid()
                          ? absl::StrCat("run chown root ", path, " (or chown it to uid ",
                                         ::geteuid(), ", this server's user)")
                          : problem->fix;
    return absl::FailedPreconditionError(absl::StrCat(
        named, " ", problem->what, ": another user could ", consequence, "; ", fix));
  }
  // Whoever may write to a directory on the way could replace the file (or the symlink to it),
  // and whoever owns a symlink on the way could point it elsewhere.
  return CheckPathToFile(path, named, consequence);
}

absl::Status CheckTrustedFile(const std::string& path, absl::string_view what,
                              absl::string_view consequence) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return CannotCheck(path, what, std::strerror(errno));
  return CheckTrustedFile(path, st, what, consequence);
}

}  // namespace cnp
