#include "adapter/line_io.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cnp::adapter {
namespace {
constexpr size_t kReadChunk = 64 * 1024;
}  // namespace

std::optional<std::string_view> LineReader::Next() {
  while (true) {
    const char* from = buffer_.data() + start_ + scanned_;
    if (const void* newline = std::memchr(from, '\n', end_ - start_ - scanned_)) {
      const size_t at = static_cast<const char*>(newline) - buffer_.data();
      std::string_view line(buffer_.data() + start_, at - start_);
      start_ = at + 1;
      scanned_ = 0;
      return line;
    }
    scanned_ = end_ - start_;
    if (eof_) return std::nullopt;

    // Move the unfinished line to the front, and grow only when a line outgrows the buffer.
    if (start_ > 0) {
      std::memmove(buffer_.data(), buffer_.data() + start_, end_ - start_);
      end_ -= start_;
      start_ = 0;
    }
    if (buffer_.size() - end_ < kReadChunk)
      buffer_.resize(std::max(2 * buffer_.size(), end_ + kReadChunk));
    ssize_t n;
    do {
      n = ::read(fd_, buffer_.data() + end_, buffer_.size() - end_);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      eof_ = true;
    } else {
      end_ += static_cast<size_t>(n);
    }
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
