// CouchDB's query-server pipes, framed into lines: CouchDB writes one JSON command per line on
// its query server's stdin and reads one answer per line from its stdout. The one reader and
// writer of those pipes, for cnp-adapter (a stream session: adapter/main.cc) and for a worker
// serving a direct session (service/worker/direct_session.h), which reads a line per document:
// a burst of lines costs one read(), and a line is handed out in place, with no copy and no
// allocation.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cnp::couchdb {

// The longest line read from CouchDB unless a caller says otherwise: cnp-adapter's default
// --max-line-bytes, which a direct session's worker is given too. CouchDB's own limit on a document is 8 MB
// by default (max_document_size); a line carries one document, or a batch of reduce values, with
// room to spare.
inline constexpr size_t kDefaultMaxLineBytes = size_t{64} << 20;

// How much of a line over the limit LineReader keeps (dropped_start()): enough for
// PeekCommand (command.h) to tell which command was lost, and for a message.
inline constexpr size_t kKeptOfLongLine = 256;

// Reads newline-terminated lines from a descriptor in large chunks, holding at most about one
// line of max_line_bytes (and a read's room) in memory whatever the input.
class LineReader {
 public:
  // Called with the descriptor before every read() that may block, i.e. whenever nothing
  // buffered would answer Next(): a caller flushes what must go out before it waits for CouchDB.
  using BeforeWaiting = std::function<void(int fd)>;

  explicit LineReader(int fd, size_t max_line_bytes = kDefaultMaxLineBytes,
                      BeforeWaiting before_waiting = nullptr)
      : fd_(fd), max_line_bytes_(max_line_bytes), before_waiting_(std::move(before_waiting)) {}

  // The next line without its "\n", valid until the next call; nothing at the end of input. A
  // last line that the end of input cuts off is returned like any other: it gets an answer.
  // Errors:
  //   - RESOURCE_EXHAUSTED: a line was longer than max_line_bytes. It has been read to its end
  //     without being kept, so the next call reads the line after it; dropped_start() holds its
  //     first bytes.
  //   - UNAVAILABLE: reading from CouchDB failed (the message has the system's reason). Whatever
  //     was buffered is lost with it: the caller ends the session.
  absl::StatusOr<std::optional<std::string_view>> Next();

  // After Next() returned RESOURCE_EXHAUSTED: the first bytes (at most kKeptOfLongLine) of the
  // line it dropped. Valid until the next call.
  std::string_view dropped_start() const { return dropped_start_; }
  size_t max_line_bytes() const { return max_line_bytes_; }
  // Whether part of a line has been read (or a line over the limit is being dropped): asked by
  // a BeforeWaiting hook, it tells a wait in the middle of a line from one between lines.
  bool mid_line() const { return dropping_ || end_ != begin_; }

 private:
  // Makes room and reads once more (more than once only after EINTR); sets at_end_ at the end
  // of input.
  absl::Status Fill();
  absl::Status TooLong() const;

  int fd_;
  size_t max_line_bytes_;
  BeforeWaiting before_waiting_;
  // Replaces the buffer with one of `capacity` bytes holding what was read; only those bytes
  // are written, so the rest costs no memory until a read() fills it.
  void Grow(size_t capacity);

  // buffer_[begin_, end_) is read but not yet handed out; the rest, to capacity_, is spare room,
  // kept so that a read() does not first zero-fill a fresh chunk. Never larger than the longest
  // line allowed and a read's room: a std::string resized to that size doubled its capacity
  // and zero-filled it, so a line without its newline held twice --max-line-bytes.
  std::unique_ptr<char[]> buffer_;
  size_t capacity_ = 0;
  size_t begin_ = 0;
  size_t scanned_ = 0;     // buffer_[begin_, scanned_) holds no newline
  size_t end_ = 0;
  bool at_end_ = false;    // the input is closed: what is buffered is all there is
  bool dropping_ = false;  // inside a line over the limit, reading on to its newline
  std::string dropped_start_;
};

// Writes all of `bytes` to CouchDB (its pipe on `fd`), retrying on short writes and EINTR.
// UNAVAILABLE when a write failed (CouchDB closed its end: EPIPE, with SIGPIPE ignored).
absl::Status WriteAll(int fd, std::string_view bytes);

}  // namespace cnp::couchdb
