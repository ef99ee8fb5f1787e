// Line framing on CouchDB's pipes: one JSON value per line in each direction.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace cnp::adapter {

// CouchDB's own limit on a document is 8 MB by default (max_document_size); a line carries one
// document, or a batch of reduce values, with room to spare.
inline constexpr size_t kDefaultMaxLineBytes = size_t{64} << 20;
// The most --max-line-bytes may be: a line travels to cnp-server in one gRPC message, which it
// accepts up to 256 MiB; this leaves room for the message's own framing.
inline constexpr size_t kMaxLineBytesLimit = (size_t{256} << 20) - (size_t{64} << 10);

// Reads newline-terminated lines from a file descriptor, holding at most about one line of
// max_line_bytes in memory whatever the input.
class LineReader {
 public:
  explicit LineReader(int fd, size_t max_line_bytes = kDefaultMaxLineBytes)
      : fd_(fd), max_line_bytes_(max_line_bytes) {}

  // The next line without its "\n" (valid until the next call), or nothing at end of input.
  // A last line that end of input cuts off is returned like any other: it gets an answer.
  // A line longer than max_line_bytes is read to its end without being kept; Next() then
  // returns its first bytes (enough to tell the command) and too_long() is true.
  std::optional<std::string_view> Next();

  // Whether the line Next() returned last was longer than max_line_bytes.
  bool too_long() const { return too_long_; }
  size_t max_line_bytes() const { return max_line_bytes_; }

 private:
  // Reads more input into the buffer; sets eof_ at end of input or on an error.
  void Fill();

  int fd_;
  size_t max_line_bytes_;
  // buffer_[start_, end_) is read but not yet handed out; the rest is spare room, kept so that
  // each read() does not first zero-fill a fresh chunk.
  std::string buffer_;
  size_t start_ = 0;
  size_t end_ = 0;
  size_t scanned_ = 0;  // bytes after start_ already known to hold no newline
  bool eof_ = false;
  // While a line over the limit is being skipped: its first bytes, handed out at its end.
  bool skipping_ = false;
  std::string skipped_start_;
  bool too_long_ = false;
};

// Writes all of `data`, retrying on short writes and EINTR.
absl::Status WriteAll(int fd, std::string_view data);

}  // namespace cnp::adapter
