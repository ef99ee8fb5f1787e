// Length-prefixed frames on a stream socket: the transport between cnp-server and its workers,
// and between cnp-adapter and cnp-server's direct-session socket.
//
// A frame is a 4-byte little-endian payload length followed by the payload (a serialized
// cnp.worker.v1.Task or Reply, or a direct session's hello and its answer). The functions below
// do blocking I/O, bounded by a deadline where one is given: the workers and cnp-adapter use
// them. cnp-server's side is non-blocking, on Asio: ProcessWorker (service/pool) and the session
// listener (service/session) read and write frames themselves with the length helpers here;
// ProcessWorker sends a frame with descriptors with WriteFrameWithDescriptors once its socket
// is writable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace cnp {

// Frames larger than this are refused: a worker or server that sends one is broken.
inline constexpr uint32_t kMaxFrameBytes = 1u << 30;

// A frame's header: its payload's length, little-endian. For callers that do their own I/O
// (awaited on an Asio loop) and the functions below alike, so that the format is written once.
// Inline: every frame on the hot path passes here.
inline constexpr size_t kFrameHeaderBytes = 4;
inline void EncodeFrameLength(uint32_t length, char* header) {
  for (size_t i = 0; i < kFrameHeaderBytes; ++i) header[i] = static_cast<char>(length >> (8 * i));
}
inline uint32_t DecodeFrameLength(const char* header) {
  uint32_t length = 0;
  for (size_t i = 0; i < kFrameHeaderBytes; ++i) {
    length |= uint32_t{static_cast<unsigned char>(header[i])} << (8 * i);
  }
  return length;
}

// The most descriptors one frame may carry, for its sender and every reader (a direct session's
// frames carry two: CouchDB's stdin and stdout, from the adapter to the server and on to a
// worker). A reader makes room for this many; the kernel closes what does not fit, and the
// reader refuses the frame.
inline constexpr size_t kMaxFrameDescriptors = 4;

// Waits until `fd` is ready for `events` (poll(2) flags) or `deadline` passes: OK (ready, or
// hung up: the next I/O call tells), DEADLINE_EXCEEDED, or UNAVAILABLE when poll fails.
absl::Status WaitForFd(int fd, short events, absl::Time deadline);

// Writes one frame, retrying on EINTR and short writes. Blocks until written or failed; `fd`
// may be non-blocking, in which case it waits with poll() until `deadline`.
absl::Status WriteFrame(int fd, absl::string_view payload,
                        absl::Time deadline = absl::InfiniteFuture());

// Writes one frame with file descriptors attached (SCM_RIGHTS), on the same sendmsg() as the
// frame's first byte, so that a reader that collects descriptors per byte read (the worker's
// FrameReader) knows which frame they came with. `fd` must be a unix stream socket. The
// descriptors stay open here (the receiver gets duplicates); close them after a successful send.
// At most kMaxFrameDescriptors; INVALID_ARGUMENT for more.
absl::Status WriteFrameWithDescriptors(int fd, absl::string_view payload,
                                       const std::vector<int>& descriptors,
                                       absl::Time deadline = absl::InfiniteFuture());

// Reads one whole frame into `payload`. Returns:
//   OK                  a frame was read
//   UNAVAILABLE         the peer closed the socket or the read failed (message says which)
//   DEADLINE_EXCEEDED   `deadline` passed first
//   DATA_LOSS           a length above kMaxFrameBytes
absl::Status ReadFrame(int fd, std::string& payload,
                       absl::Time deadline = absl::InfiniteFuture());

}  // namespace cnp
