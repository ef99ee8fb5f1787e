#include "common/code_directory.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <system_error>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/code_ownership.h"

namespace cnp {
namespace {

namespace fs = std::filesystem;

// Symlinks followed on one walk before giving up, as the kernel's ELOOP does.
constexpr int kMaxSymlinks = 40;

class DirectoryWalk {
 public:
  DirectoryWalk(absl::string_view what, absl::string_view consequence,
                absl::string_view what_is_there)
      : what_(what), consequence_(consequence), what_is_there_(what_is_there) {}

  // Follows `path` from `from` one component at a time, checking each directory it enters as
  // one above the code; returns the directory reached (or the deepest existing one).
  absl::StatusOr<fs::path> Walk(const fs::path& path, fs::path from) {
    fs::path current = path.is_absolute() ? fs::path("/") : std::move(from);
    if (path.is_absolute()) {
      if (absl::Status s = CheckAbove(current); !s.ok()) return s;
    }
    for (const fs::path& part : path.relative_path()) {
      if (part.empty() || part == ".") continue;
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
        absl::StatusOr<fs::path> reached = Walk(target, current);
        if (!reached.ok() || missing_) return reached;
        current = *std::move(reached);
        continue;
      }
      if (!S_ISDIR(st.st_mode)) return Failed(next, "not a directory");
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
  absl::Status CheckAbove(const fs::path& dir) { return Check(dir, StickyBit::kSuffices); }

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
  int symlinks_ = 0;
  bool missing_ = false;
};

}  // namespace

absl::Status CheckCodeDirectory(const std::string& dir, absl::string_view what) {
  std::error_code error;
  fs::path cwd = fs::current_path(error);
  if (error) return absl::FailedPreconditionError(absl::StrCat(what, ": ", error.message()));
  DirectoryWalk walk(absl::StrCat(what, " ", dir), "change the Python code this service runs",
                     "the code");
  // From / even for a relative `dir`, so the directories above the current one count too.
  absl::StatusOr<fs::path> reached = walk.Walk(cwd / dir, "/");
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
  std::error_code error;
  fs::path cwd = fs::current_path(error);
  if (error) return absl::FailedPreconditionError(absl::StrCat(what, ": ", error.message()));
  DirectoryWalk walk(what, consequence, "the file");
  absl::StatusOr<fs::path> reached = walk.Walk(cwd / dir, "/");
  if (!reached.ok()) return reached.status();
  if (walk.missing()) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": cannot check ", dir, ": it does not exist"));
  }
  return absl::OkStatus();
}

}  // namespace cnp
