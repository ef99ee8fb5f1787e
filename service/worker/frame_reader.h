// Reads the server's frames (see service/common/framing.h) with as few system calls as the
// bytes allow: a small task arrives in one read() instead of one for the length and one for
// the payload. On the lockstep map path that is a syscall saved per document.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"

namespace cnp::worker {

class FrameReader {
 public:
  explicit FrameReader(int fd) : fd_(fd), buffer_(new char[kBufferBytes]) {}

  // Blocks for the next whole frame. UNAVAILABLE when the peer closed the socket (or the read
  // failed), DATA_LOSS for a length over the limit.
  absl::Status Read(std::string& payload);

 private:
  static constexpr size_t kBufferBytes = 64 * 1024;

  // One read() of up to `size` bytes into `into`; returns how many arrived.
  absl::Status ReadSome(char* into, size_t size, size_t& got);

  int fd_;
  std::unique_ptr<char[]> buffer_;
  size_t begin_ = 0;  // unread bytes are buffer_[begin_, end_)
  size_t end_ = 0;
};

}  // namespace cnp::worker
