#include "common/file_text.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cnp {
namespace {

absl::Status CannotRead(const std::string& path, int error) {
  return absl::InvalidArgumentError(absl::StrCat("cannot read ", path, ": ", std::strerror(error)));
}

}  // namespace

absl::StatusOr<std::string> ReadFileText(const std::string& path, int64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return CannotRead(path, errno);
  std::string text;
  char chunk[64 * 1024];
  for (;;) {
    if (max_bytes >= 0 && static_cast<int64_t>(text.size()) > max_bytes) break;
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;  // a directory: EISDIR
      ::close(fd);
      return CannotRead(path, error);
    }
    if (n == 0) break;
    text.append(chunk, static_cast<size_t>(n));
  }
  ::close(fd);
  if (max_bytes >= 0 && static_cast<int64_t>(text.size()) > max_bytes + 1) {
    text.resize(static_cast<size_t>(max_bytes) + 1);
  }
  return text;
}

}  // namespace cnp
