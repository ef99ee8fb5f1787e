#include "adapter/line_io.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cnp::adapter {
namespace {
constexpr size_t kReadChunk = 64 * 1024;
// What is kept of a line over the limit: enough for couchdb::PeekCommand and a message.
constexpr size_t kKeptOfLongLine = 256;
}  // namespace

std::optional<std::string_view> LineReader::Next() {
  too_long_ = false;
  while (true) {
    const char* from = buffer_.data() + start_ + scanned_;
    if (const void* newline = std::memchr(from, '\n', end_ - start_ - scanned_)) {
      const size_t at = static_cast<const char*>(newline) - buffer_.data();
      std::string_view line(buffer_.data() + start_, at - start_);
      start_ = at + 1;
      scanned_ = 0;
      if (skipping_) {
        skipping_ = false;
        too_long_ = true;
        return skipped_start_;
      }
      if (line.size() > max_line_bytes_) {
        too_long_ = true;
        return line.substr(0, kKeptOfLongLine);
      }
      return line;
    }
    scanned_ = end_ - start_;
    if (skipping_) {
      start_ = end_ = scanned_ = 0;  // the middle of a long line: dropped as it comes
    } else if (scanned_ > max_line_bytes_) {
      skipped_start_.assign(buffer_.data() + start_, std::min(scanned_, kKeptOfLongLine));
      skipping_ = true;
      start_ = end_ = scanned_ = 0;
    }
    if (eof_) {
      if (skipping_) {
        skipping_ = false;
        too_long_ = true;
        return skipped_start_;
      }
      if (start_ == end_) return std::nullopt;
      // A last line without its newline.
      std::string_view line(buffer_.data() + start_, end_ - start_);
      start_ = end_;
      scanned_ = 0;
      return line;
    }
    Fill();
  }
}

void LineReader::Fill() {
  // Move the unfinished line to the front, and grow only when a line outgrows the buffer, never
  // much beyond the longest line allowed.
  if (start_ > 0) {
    std::memmove(buffer_.data(), buffer_.data() + start_, end_ - start_);
    end_ -= start_;
    start_ = 0;
  }
  if (buffer_.size() - end_ < kReadChunk) {
    const size_t doubled = std::min(2 * buffer_.size(), max_line_bytes_ + 1 + kReadChunk);
    buffer_.resize(std::max(doubled, end_ + kReadChunk));
  }
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
