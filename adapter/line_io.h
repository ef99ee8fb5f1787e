// Line framing on CouchDB's pipes: one JSON value per line in each direction.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace cnp::adapter {

// Reads newline-terminated lines of any length from a file descriptor.
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}

  // The next line without its "\n" (valid until the next call), or nothing at end of input.
  // A last line cut off by end of input is dropped: CouchDB closed the pipe mid-write, so there
  // is nobody left to answer.
  std::optional<std::string_view> Next();

 private:
  int fd_;
  // buffer_[start_, end_) is read but not yet handed out; the rest is spare room, kept so that
  // each read() does not first zero-fill a fresh chunk.
  std::string buffer_;
  size_t start_ = 0;
  size_t end_ = 0;
  size_t scanned_ = 0;  // bytes after start_ already known to hold no newline
  bool eof_ = false;
};

// Writes all of `data`, retrying on short writes and EINTR.
absl::Status WriteAll(int fd, std::string_view data);

}  // namespace cnp::adapter
