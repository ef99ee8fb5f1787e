#include "service/rpc/access_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/code_ownership.h"

namespace cnp::rpc {
namespace {

// The log file at `path`, opened for appending, or why it may not be: the same rules at start
// and at every reopen, since the file a rotation leaves at the path may be anyone's.
absl::StatusOr<int> OpenLogFile(const std::string& path) {
  // Not through a symlink, and not a file another user keeps: either would let them point the
  // server's writes at a file of their choosing (as root: any file) or rewrite its record.
  const int fd =
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    const int error = errno;
    if (error == ELOOP) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--access-log: ", path, " is a symbolic link, which another user could point at any "
          "file; give the log file's own path"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("--access-log: cannot open ", path, ": ", std::strerror(error)));
  }
  struct stat st {};
  absl::Status refused;
  if (::fstat(fd, &st) != 0) {
    refused = absl::InvalidArgumentError(
        absl::StrCat("--access-log: cannot check ", path, ": ", std::strerror(errno)));
  } else if (!S_ISREG(st.st_mode)) {
    refused = absl::FailedPreconditionError(
        absl::StrCat("--access-log: ", path, " is not a regular file"));
  } else if (std::optional<OwnershipProblem> problem =
                 OthersCanChange(path, st, StickyBit::kNotEnough, "the log")) {
    refused = absl::FailedPreconditionError(absl::StrCat(
        "--access-log: ", path, " ", problem->what,
        ": another user could rewrite or remove what the server records; ", problem->fix));
  }
  if (!refused.ok()) {
    ::close(fd);
    return refused;
  }
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AccessLog>> AccessLog::Open(const std::string& path) {
  if (path.empty()) return std::unique_ptr<AccessLog>(new AccessLog(STDERR_FILENO, path));
  absl::StatusOr<int> fd = OpenLogFile(path);
  if (!fd.ok()) return fd.status();
  return std::unique_ptr<AccessLog>(new AccessLog(*fd, path));
}

AccessLog::~AccessLog() {
  if (fd_ != STDERR_FILENO) ::close(fd_);
}

absl::Status AccessLog::Reopen() const {
  if (path_.empty()) return absl::OkStatus();
  absl::StatusOr<int> fresh = OpenLogFile(path_);
  if (!fresh.ok()) return fresh.status();
  // The descriptor's number stays: writers on other threads read fd_ without a lock of their
  // own, and the log's write lock orders the swap between two whole lines.
  const bool replaced = ReplaceLogDescriptor(fd_, *fresh);
  const int error = errno;
  ::close(*fresh);
  if (!replaced) {
    return absl::InternalError(
        absl::StrCat("--access-log: cannot switch to ", path_, ": ", std::strerror(error)));
  }
  return absl::OkStatus();
}

void AccessLog::Write(absl::string_view event, absl::string_view peer,
                      std::initializer_list<LogField> details) const {
  Write(event, peer, absl::Span<const LogField>(details.begin(), details.size()));
}

void AccessLog::Write(absl::string_view event, absl::string_view peer,
                      absl::Span<const LogField> details) const {
  std::vector<LogField> fields{{"peer", peer.empty() ? "-" : peer}};
  fields.insert(fields.end(), details.begin(), details.end());
  WriteLogLine(fd_, FormatLogLine("ACCESS", event, fields));
}

}  // namespace cnp::rpc
