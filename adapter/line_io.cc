#include "adapter/line_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cnp::adapter {
namespace {
constexpr size_t kReadChunk = 64 * 1024;
}  // namespace

std::optional<std::string_view> LineReader::Next() {
  while (true) {
    const size_t newline = buffer_.find('\n', start_ + scanned_);
    if (newline != std::string::npos) {
      std::string_view line(buffer_.data() + start_, newline - start_);
      start_ = newline + 1;
      scanned_ = 0;
      return line;
    }
    scanned_ = buffer_.size() - start_;
    if (eof_) return std::nullopt;

    // Drop the lines already handed out before growing the buffer.
    if (start_ > 0) {
      buffer_.erase(0, start_);
      start_ = 0;
    }
    const size_t old_size = buffer_.size();
    buffer_.resize(old_size + kReadChunk);
    ssize_t n;
    do {
      n = ::read(fd_, buffer_.data() + old_size, kReadChunk);
    } while (n < 0 && errno == EINTR);
    buffer_.resize(old_size + (n > 0 ? static_cast<size_t>(n) : 0));
    if (n <= 0) eof_ = true;
  }
}

absl::Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("write failed: ", std::strerror(errno)));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

}  // namespace cnp::adapter
