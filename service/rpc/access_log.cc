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

absl::StatusOr<std::unique_ptr<AccessLog>> AccessLog::Open(const std::string& path) {
  if (path.empty()) return std::unique_ptr<AccessLog>(new AccessLog(STDERR_FILENO));
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
  return std::unique_ptr<AccessLog>(new AccessLog(fd));
}

AccessLog::~AccessLog() {
  if (fd_ != STDERR_FILENO) ::close(fd_);
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
