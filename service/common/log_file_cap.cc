#include "service/common/log_file_cap.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "service/common/log.h"

namespace cnp {
namespace {

absl::Status Failed(absl::string_view what, const std::string& path, int error = errno) {
  return absl::InternalError(absl::StrCat("cannot ", what, " ", path, ": ", std::strerror(error)));
}

// Closes a descriptor when it goes out of scope.
struct ClosedAtEnd {
  int fd;
  ~ClosedAtEnd() {
    if (fd >= 0) ::close(fd);
  }
};

// All of `from` (a file opened for reading) into `to`, in the kernel where it can.
bool CopyAll(int from, int to) {
  char buffer[64 * 1024];
  for (;;) {
    const ssize_t copied = ::copy_file_range(from, nullptr, to, nullptr, 1 << 30, 0);
    if (copied > 0) continue;
    if (copied == 0) return true;
    if (errno == EINTR) continue;
    if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP) return false;
    break;  // not between these files: read and write them instead
  }
  for (;;) {
    const ssize_t n = ::read(from, buffer, sizeof buffer);
    if (n == 0) return true;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    for (ssize_t done = 0; done < n;) {
      const ssize_t written = ::write(to, buffer + done, static_cast<size_t>(n - done));
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) return false;
      done += written;
    }
  }
}

}  // namespace

absl::StatusOr<std::optional<std::string>> RotateLogFileIfOver(int fd, int64_t max_bytes) {
  struct stat info {};
  if (max_bytes <= 0 || ::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode) ||
      info.st_size <= max_bytes) {
    return std::nullopt;
  }
  const std::string link = absl::StrCat("/proc/self/fd/", fd);
  char target[4096];
  const ssize_t length = ::readlink(link.c_str(), target, sizeof target - 1);
  if (length <= 0) return Failed("find the path of", link);
  const std::string path(target, static_cast<size_t>(length));
  if (absl::EndsWith(path, " (deleted)") || info.st_nlink == 0) {
    // Deleted under the server (an operator's rm): nothing can read it by its name, and it grew
    // on, holding disk no one could see, past any cap. Emptied, as a rotation would have.
    if (::ftruncate(fd, 0) != 0) return Failed("empty the deleted", path);
    if ((::fcntl(fd, F_GETFL) & O_APPEND) == 0) ::lseek(fd, 0, SEEK_SET);
    return std::string();
  }
  if (path.front() != '/') return std::nullopt;
  // Opened afresh through /proc, for reading: the log's own descriptor may be write-only.
  ClosedAtEnd from{::open(link.c_str(), O_RDONLY | O_CLOEXEC)};
  if (from.fd < 0) return Failed("read", path);
  const std::string old_path = path + ".1";
  const std::string copy_path = old_path + ".tmp";
  ClosedAtEnd to{::open(copy_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                        info.st_mode & 0666)};
  if (to.fd < 0) return Failed("write", copy_path);
  if (!CopyAll(from.fd, to.fd)) {
    const int error = errno;
    ::unlink(copy_path.c_str());
    return Failed("copy the log to", copy_path, error);
  }
  if (::rename(copy_path.c_str(), old_path.c_str()) != 0) {
    const int error = errno;
    ::unlink(copy_path.c_str());
    return Failed(absl::StrCat("rename ", copy_path, " to"), old_path, error);
  }
  // What was written during the rename, onto the copy (still open under its new name), so that
  // only a line written between this last read and the emptying is lost: the workers' writes
  // cannot be held. Failing here, the file is not emptied: it is past its cap a little longer.
  if (!CopyAll(from.fd, to.fd)) return Failed("copy the log to", old_path);
  if (::ftruncate(fd, 0) != 0) return Failed("empty", path);
  // The workers write through the same open file: one opened without O_APPEND (a shell's `2>`)
  // would go on at the old offset, behind a hole as long as what was copied.
  if ((::fcntl(fd, F_GETFL) & O_APPEND) == 0) ::lseek(fd, 0, SEEK_SET);
  return old_path;
}

void LogFileCap::Check(absl::Time now) {
  if (now < next_try_) return;
  absl::StatusOr<std::optional<std::string>> rotated = RotateLogFileIfOver(fd_, max_bytes_);
  if (!rotated.ok()) {
    retry_wait_ = retry_wait_ == absl::ZeroDuration()
                      ? kFirstRetry
                      : std::min(retry_wait_ * 2, kLongestRetry);
    next_try_ = now + retry_wait_;
    LogWarning("the log is past --log-max-bytes (", max_bytes_, ") but ",
               rotated.status().message(), "; trying again in ",
               absl::FormatDuration(retry_wait_));
    return;
  }
  retry_wait_ = absl::ZeroDuration();
  next_try_ = absl::InfinitePast();
  if (rotated->has_value() && (*rotated)->empty()) {
    LogWarning("the log file was deleted while the server wrote to it, and grew past "
               "--log-max-bytes (", max_bytes_, ") where no one could read it: emptied; restart "
               "the server to log to a file of that name again");
  } else if (rotated->has_value()) {
    LogInfo("the log was over --log-max-bytes (", max_bytes_, "): its lines so far are in ",
            **rotated);
  }
}

}  // namespace cnp
