#include "common/code_directory.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cnp {
namespace {

namespace fs = std::filesystem;

// Symlinks followed on one walk before giving up, as the kernel's ELOOP does.
constexpr int kMaxSymlinks = 40;

class DirectoryWalk {
 public:
  explicit DirectoryWalk(absl::string_view what) : what_(what), me_(::geteuid()) {}

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
  absl::Status CheckCodeDir(const fs::path& dir) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return Failed(dir, std::strerror(errno));
    if (absl::Status s = CheckOwner(dir, st); !s.ok()) return s;
    if ((st.st_mode & 022) != 0) {
      return Refused(dir, absl::StrFormat("is writable by %s (mode %04o)", Writers(st),
                                          st.st_mode & 07777),
                     absl::StrCat("run chmod go-w ", dir.string()));
    }
    return absl::OkStatus();
  }

  bool missing() const { return missing_; }

 private:
  absl::Status CheckAbove(const fs::path& dir) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return Failed(dir, std::strerror(errno));
    if (absl::Status s = CheckOwner(dir, st); !s.ok()) return s;
    if ((st.st_mode & 022) != 0 && (st.st_mode & S_ISVTX) == 0) {
      return Refused(dir, absl::StrFormat("is writable by %s without the sticky bit (mode %04o), "
                                          "so they could rename or replace what it holds",
                                          Writers(st), st.st_mode & 07777),
                     absl::StrCat("run chmod go-w ", dir.string()));
    }
    return absl::OkStatus();
  }

  absl::Status CheckOwner(const fs::path& dir, const struct stat& st) {
    if (st.st_uid == 0 || st.st_uid == me_) return absl::OkStatus();
    return Refused(dir,
                   absl::StrFormat("belongs to uid %d, neither root nor this user (uid %d)",
                                   st.st_uid, me_),
                   absl::StrFormat("chown it to root or uid %d, or move the code elsewhere", me_));
  }

  static const char* Writers(const struct stat& st) {
    if ((st.st_mode & 002) != 0) return "every user";
    return "its group";
  }

  absl::Status Refused(const fs::path& dir, absl::string_view problem, absl::string_view fix) {
    return absl::FailedPreconditionError(absl::StrCat(
        what_, ": ", dir.string(), " ", problem,
        ": another user could change the Python code this service runs; ", fix));
  }

  absl::Status Failed(const fs::path& dir, absl::string_view problem) {
    return absl::FailedPreconditionError(
        absl::StrCat(what_, ": cannot check ", dir.string(), ": ", problem));
  }

  std::string what_;
  uid_t me_;
  int symlinks_ = 0;
  bool missing_ = false;
};

}  // namespace

absl::Status CheckCodeDirectory(const std::string& dir, absl::string_view what) {
  std::error_code error;
  fs::path cwd = fs::current_path(error);
  if (error) return absl::FailedPreconditionError(absl::StrCat(what, ": ", error.message()));
  DirectoryWalk walk(absl::StrCat(what, " ", dir));
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

}  // namespace cnp
