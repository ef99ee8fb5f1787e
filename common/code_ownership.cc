#include "common/code_ownership.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cnp {

std::optional<OwnershipProblem> OthersCanChange(const std::string& path, const struct stat& st,
                                                StickyBit sticky,
                                                std::string_view what_is_there) {
  const uid_t me = ::geteuid();
  if (st.st_uid != 0 && st.st_uid != me) {
    return OwnershipProblem{
        absl::StrFormat("belongs to uid %d, neither root nor this user (uid %d)", st.st_uid, me),
        absl::StrFormat("chown %s to root or uid %d, or move %s elsewhere", path, me,
                        what_is_there)};
  }
  if ((st.st_mode & 022) == 0) return std::nullopt;
  const char* writers = (st.st_mode & 002) != 0 ? "every user" : "its group";
  const unsigned mode = st.st_mode & 07777;
  // A directory every user may write to, with the sticky bit, may be one all users share
  // (/tmp), where closing it would break the host: the other way out is said too.
  const bool maybe_shared =
      S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX) != 0 && (st.st_mode & 002) != 0;
  const absl::string_view what(what_is_there.data(), what_is_there.size());
  std::string fix = absl::StrCat("run chmod go-w ", path);
  if (maybe_shared) {
    absl::StrAppend(&fix, ", unless all users share it (as /tmp): then move ", what,
                    " to a directory of your own");
  }
  if (sticky == StickyBit::kNotEnough) {
    return OwnershipProblem{absl::StrFormat("is writable by %s (mode %04o)", writers, mode),
                            std::move(fix)};
  }
  if (S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX) != 0) return std::nullopt;
  return OwnershipProblem{
      absl::StrFormat("is writable by %s without the sticky bit (mode %04o), so they could "
                      "rename or replace what it holds",
                      writers, mode),
      std::move(fix)};
}

}  // namespace cnp
