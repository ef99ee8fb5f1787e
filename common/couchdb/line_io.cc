#include "common/couchdb/line_io.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cnp::couchdb {
namespace {
// What one read() asks for at least: a burst of small commands arrives in one read.
constexpr size_t kReadChunk = 64 * 1024;
}  // namespace

absl::StatusOr<std::optional<std::string_view>> LineReader::Next() {
  for (;;) {
    const void* newline =
        scanned_ < end_ ? std::memchr(buffer_.get() + scanned_, '\n', end_ - scanned_) : nullptr;
    if (newline != nullptr) {
      const size_t at = static_cast<const char*>(newline) - buffer_.get();
      std::string_view line(buffer_.get() + begin_, at - begin_);
      begin_ = scanned_ = at + 1;
      if (dropping_) {  // the end of a line over the limit; its start is in dropped_start_
        dropping_ = false;
        return TooLong();
      }
      if (line.size() > max_line_bytes_) {  // all of it came in the buffer
        dropped_start_.assign(line.substr(0, kKeptOfLongLine));
        return TooLong();
      }
      return line;
    }
    scanned_ = end_;
    if (at_end_) {
      if (dropping_) {
        dropping_ = false;
        return TooLong();
      }
      if (begin_ == end_) return std::nullopt;
      // A last line without its newline (never over the limit: Fill() drops such a line).
      std::string_view last(buffer_.get() + begin_, end_ - begin_);
      begin_ = scanned_ = end_;
      return last;
    }
    if (absl::Status read = Fill(); !read.ok()) return read;
  }
}

absl::Status LineReader::Fill() {
  if (dropping_) {
    begin_ = scanned_ = end_ = 0;  // the middle of a line over the limit: dropped as it comes
  } else if (end_ - begin_ > max_line_bytes_) {
    // Over the limit before its newline: keep its start, drop the rest as it comes.
    dropped_start_.assign(buffer_.get() + begin_, std::min(end_ - begin_, kKeptOfLongLine));
    dropping_ = true;
    begin_ = scanned_ = end_ = 0;
  } else if (begin_ > 0) {
    // The unfinished line moves to the front (nothing, usually: the burst ended on a newline).
    std::memmove(buffer_.get(), buffer_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    scanned_ -= begin_;
    begin_ = 0;
  }
  // Grow only when a line outgrows the buffer, never beyond the longest line allowed and a
  // read's room. Here end_ <= max_line_bytes_, so the new size leaves at least kReadChunk free.
  if (capacity_ - end_ < kReadChunk / 2) {
    // Doubling, but straight to the most once the doubled size passes half of it: a last step
    // from a buffer of about the most (64 MiB, say, then 64 MiB + 64 KiB) copied a whole line
    // into a second buffer, and the adapter held two lines (145 MB for a 300 MB line). Now the
    // buffer replaced is at most half the new one, and of the new one only the copy is written
    // until reads fill it: about one line at most.
    const size_t most = max_line_bytes_ + 1 + kReadChunk;
    const size_t doubled = std::max(2 * capacity_, end_ + kReadChunk);
    Grow(doubled > most / 2 ? most : doubled);
  }
  for (;;) {
    if (before_waiting_) before_waiting_(fd_);
    const ssize_t n = ::read(fd_, buffer_.get() + end_, capacity_ - end_);
    if (n > 0) {
      end_ += static_cast<size_t>(n);
      return absl::OkStatus();
    }
    if (n == 0) {
      at_end_ = true;
      return absl::OkStatus();
    }
    if (errno != EINTR) {
      return absl::UnavailableError(
          absl::StrCat("reading from CouchDB failed: ", std::strerror(errno)));
    }
  }
}

void LineReader::Grow(size_t capacity) {
  // Here begin_ is 0 (Fill moved the unfinished line to the front). The old buffer is freed once
  // copied: the most held at once is the line so far twice, which is at most one buffer of the
  // new size.
  std::unique_ptr<char[]> bigger = std::make_unique_for_overwrite<char[]>(capacity);
  if (end_ > 0) std::memcpy(bigger.get(), buffer_.get(), end_);
  buffer_ = std::move(bigger);
  capacity_ = capacity;
}

absl::Status LineReader::TooLong() const {
  return absl::ResourceExhaustedError(absl::StrCat("a line from CouchDB was longer than ",
                                                   max_line_bytes_,
                                                   " bytes and was not processed"));
}

absl::Status WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return absl::UnavailableError(absl::StrCat(
          "writing to CouchDB failed: ", n == 0 ? "no byte written" : std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

}  // namespace cnp::couchdb
