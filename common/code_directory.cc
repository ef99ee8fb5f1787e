#include "common/code_directory.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <system_error>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/code_ownership.h"

namespace cnp {
namespace {

namespace fs = std::filesystem;

// Symlinks followed on one walk before giving up, as the kernel's ELOOP does.
constexpr int kMaxSymlinks = 40;

// Whether a walk holds the directories it enters to the rule, or only the links it follows.
enum class Directories { kChecked, kNotChecked };

class DirectoryWalk {
 public:
  DirectoryWalk(absl::string_view what, absl::string_view consequence,
                absl::string_view what_is_there, Directories directories = Directories::kChecked)
      : what_(what), consequence_(consequence), what_is_there_(what_is_there),
        directories_(directories) {}

  // Follows `path` from `from` one component at a time, checking each directory it enters as
  // one above the code and each symbolic link it follows; returns the directory reached (or the
  // deepest existing one), or, with `may_end_in_file`, the file the path names.
  absl::StatusOr<fs::path> Walk(const fs::path& path, fs::path from, bool may_end_in_file) {
    fs::path current = path.is_absolute() ? fs::path("/") : std::move(from);
    if (path.is_absolute()) {
      if (absl::Status s = CheckAbove(current); !s.ok()) return s;
    }
    std::vector<fs::path> parts;
    for (const fs::path& part : path.relative_path()) {
      if (!part.empty() && part != ".") parts.push_back(part);
    }
    for (size_t i = 0; i < parts.size(); ++i) {
      const fs::path& part = parts[i];
      const bool last = i + 1 == parts.size();
      if (part == "..") {
        current = current.parent_path();  // `current` has no symlinks: this is the real parent
        continue;
      }
      fs::path next = current / part;
      struct stat st {};
      if (::lstat(next.c_str(), &st) != 0) {
        if (errno == ENOENT) {
          missing_ = true;
          return current;
        }
        return Failed(next, std::strerror(errno));
      }
      if (S_ISLNK(st.st_mode)) {
        if (++symlinks_ > kMaxSymlinks) return Failed(next, "too many levels of symbolic links");
        std::error_code error;
        fs::path target = fs::read_symlink(next, error);
        if (error) return Failed(next, error.message());
        // Its owner may point it elsewhere at any time, in a directory it may not otherwise
        // write to (a sticky one such as /tmp): only root's and this user's are followed.
        if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
          return Refused(next,
                         absl::StrFormat("is a symbolic link (to %s) that belongs to uid %d, "
                                         "neither root nor this user (uid %d)",
                                         target.string(), st.st_uid, ::geteuid()),
                         absl::StrCat("name ", (current / target).lexically_normal().string(),
                                      " directly, or through a link of root's or this user's "
                                      "in a directory no other user may write to"));
        }
        absl::StatusOr<fs::path> reached = Walk(target, current, may_end_in_file && last);
        if (!reached.ok() || missing_) return reached;
        current = *std::move(reached);
        continue;
      }
      if (!S_ISDIR(st.st_mode)) {
        if (!(may_end_in_file && last)) return Failed(next, "not a directory");
        return next;
      }
      if (absl::Status s = CheckAbove(next); !s.ok()) return s;
      current = std::move(next);
    }
    return current;
  }

  // The directory the code is in: nobody but its owner may write to it, sticky or not (the
  // sticky bit keeps others from replacing files, not from adding new modules).
  absl::Status CheckCodeDir(const fs::path& dir) { return Check(dir, StickyBit::kNotEnough); }

  bool missing() const { return missing_; }

 private:
  absl::Status CheckAbove(const fs::path& dir) {
    if (directories_ == Directories::kNotChecked) return absl::OkStatus();
    return Check(dir, StickyBit::kSuffices);
  }

  absl::Status Check(const fs::path& dir, StickyBit sticky) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return Failed(dir, std::strerror(errno));
    if (std::optional<OwnershipProblem> problem =
            OthersCanChange(dir.string(), st, sticky, what_is_there_)) {
      return Refused(dir, problem->what, problem->fix);
    }
    return absl::OkStatus();
  }

  absl::Status Refused(const fs::path& dir, absl::string_view problem, absl::string_view fix) {
    return absl::FailedPreconditionError(absl::StrCat(
        what_, ": ", dir.string(), " ", problem,
        ": another user could ", consequence_, "; ", fix));
  }

  absl::Status Failed(const fs::path& dir, absl::string_view problem) {
    return absl::FailedPreconditionError(
        absl::StrCat(what_, ": cannot check ", dir.string(), ": ", problem));
  }

  std::string what_;
  std::string consequence_;
  std::string what_is_there_;
  Directories directories_;
  int symlinks_ = 0;
  bool missing_ = false;
};

// `path` from /: a relative one below the current directory, which only it needs (a worker
// whose current directory was deleted still imports by absolute paths).
absl::StatusOr<fs::path> FromRoot(const std::string& path, absl::string_view what) {
  if (fs::path(path).is_absolute()) return fs::path(path);
  std::error_code error;
  fs::path cwd = fs::current_path(error);
  if (error) return absl::FailedPreconditionError(absl::StrCat(what, ": ", error.message()));
  return cwd / path;
}

// The file `file` names, as the walk reached it (links followed).
absl::StatusOr<fs::path> WalkToFile(const std::string& file, absl::string_view what,
                                    absl::string_view consequence, Directories directories) {
  absl::StatusOr<fs::path> path = FromRoot(file, what);
  if (!path.ok()) return path.status();
  DirectoryWalk walk(what, consequence, "the file", directories);
  absl::StatusOr<fs::path> reached = walk.Walk(*path, "/", /*may_end_in_file=*/true);
  if (!reached.ok()) return reached.status();
  if (walk.missing()) {
    return absl::NotFoundError(
        absl::StrCat(what, ": cannot check ", file, ": it does not exist"));
  }
  return reached;
}

}  // namespace

absl::Status CheckCodeDirectory(const std::string& dir, absl::string_view what) {
  absl::StatusOr<fs::path> path = FromRoot(dir, what);
  if (!path.ok()) return path.status();
  DirectoryWalk walk(absl::StrCat(what, " ", dir), "change the Python code this service runs",
                     "the code");
  // From / even for a relative `dir`, so the directories above the current one count too.
  absl::StatusOr<fs::path> reached = walk.Walk(*path, "/", /*may_end_in_file=*/false);
  if (!reached.ok()) return reached.status();
  absl::Status status = walk.CheckCodeDir(*reached);
  if (!status.ok() && walk.missing()) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " ", dir, " does not exist, and whoever may write to ", reached->string(),
        " could create it (", status.message(), "); create ", dir, " yourself or leave it out"));
  }
  return status;
}

absl::Status CheckDirectoriesHolding(const std::string& dir, absl::string_view what,
                                     absl::string_view consequence) {
  absl::StatusOr<fs::path> path = FromRoot(dir, what);
  if (!path.ok()) return path.status();
  DirectoryWalk walk(what, consequence, "the file");
  absl::StatusOr<fs::path> reached = walk.Walk(*path, "/", /*may_end_in_file=*/false);
  if (!reached.ok()) return reached.status();
  if (walk.missing()) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": cannot check ", dir, ": it does not exist"));
  }
  return absl::OkStatus();
}

absl::Status CheckPathToFile(const std::string& file, absl::string_view what,
                             absl::string_view consequence) {
  return WalkToFile(file, what, consequence, Directories::kChecked).status();
}

absl::Status CheckLinksToOpenedFile(const std::string& file, const struct stat& opened,
                                    absl::string_view what, absl::string_view consequence) {
  absl::StatusOr<fs::path> reached = WalkToFile(file, what, consequence, Directories::kNotChecked);
  if (!reached.ok()) return reached.status();
  // The walk goes by path after the open: a link swapped meanwhile (a file put in its place)
  // would pass it, so the file it reached must be the one opened.
  struct stat st {};
  if (::lstat(reached->c_str(), &st) != 0 || st.st_dev != opened.st_dev ||
      st.st_ino != opened.st_ino) {
    return absl::AbortedError(absl::StrCat(what, ": ", file,
                                           " changed while it was being checked"));
  }
  return absl::OkStatus();
}

}  // namespace cnp
