#include "service/rpc/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace cnp::rpc {

absl::StatusOr<std::unique_ptr<AccessLog>> AccessLog::Open(const std::string& path) {
  if (path.empty()) return std::unique_ptr<AccessLog>(new AccessLog(STDERR_FILENO));
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--access-log: cannot open ", path, ": ", std::strerror(errno)));
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
  const std::string line = FormatLogLine("ACCESS", event, fields);
  (void)!::write(fd_, line.data(), line.size());
}

}  // namespace cnp::rpc
