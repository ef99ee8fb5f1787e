// Reads the server's frames (see service/common/framing.h) with as few system calls as the
// bytes allow: a small task arrives in one read instead of one for the length and one for the
// payload. On the lockstep map path that is a syscall saved per document.
//
// Frames may carry file descriptors (SCM_RIGHTS, framing.h's WriteFrameWithDescriptors: a
// DirectSession task brings CouchDB's pipes). The kernel hands descriptors to the receive call
// that reads the bytes they were sent with, and ends that call right after them, so they belong
// to the frame holding the last byte of that call. Reads are buffered, so that call may have
// happened while an earlier frame was being read: descriptors wait, tagged with their place in
// the stream, until their frame is returned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace cnp::worker {

class FrameReader {
 public:
  explicit FrameReader(int fd) : fd_(fd), buffer_(new char[kBufferBytes]) {}
  // Closes descriptors that arrived for frames never read.
  ~FrameReader();

  FrameReader(const FrameReader&) = delete;
  FrameReader& operator=(const FrameReader&) = delete;

  // Blocks for the next whole frame. UNAVAILABLE when the peer closed the socket (or the read
  // failed), DATA_LOSS for a length over the limit or descriptors cut short (too many).
  // Descriptors that came with the frame are appended to `descriptors` (the caller owns them),
  // or closed when it is null: a frame that should carry none must not leak what it carried.
  absl::Status Read(std::string& payload, std::vector<int>* descriptors = nullptr);

 private:
  static constexpr size_t kBufferBytes = 64 * 1024;

  struct ArrivedDescriptors {
    uint64_t stream_end;  // stream offset just past the last byte of the call they came with
    std::vector<int> fds;
  };

  // One receive call of up to `size` bytes into `into`; returns how many arrived.
  absl::Status ReadSome(char* into, size_t size, size_t& got);
  // Hands out (or closes) the descriptors of the frame that ends at stream offset `frame_end`.
  void TakeDescriptors(uint64_t frame_end, std::vector<int>* descriptors);

  int fd_;
  std::unique_ptr<char[]> buffer_;
  size_t begin_ = 0;  // unread bytes are buffer_[begin_, end_)
  size_t end_ = 0;
  uint64_t received_ = 0;  // bytes received since the start of the stream
  bool plain_reads_ = false;  // fd_ is not a socket (a pipe in a test): read(), no descriptors
  std::deque<ArrivedDescriptors> pending_;
};

}  // namespace cnp::worker
