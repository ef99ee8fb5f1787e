// Receiving the open descriptors (SCM_RIGHTS) that ride on a frame sent by
// WriteFrameWithDescriptors (service/common/framing.h): how cnp-server receives CouchDB's pipes
// from cnp-adapter. The descriptors come with the frame's first byte, so the first read of the
// frame is a recvmsg() that collects them; the rest is an ordinary frame. The session listener
// awaits readiness itself and calls ReceiveWithDescriptors.
#pragma once

#include <cstddef>
#include <vector>

#include "absl/status/statusor.h"
#include "service/common/framing.h"

namespace cnp {

// One recvmsg() of up to `size` bytes that never waits (MSG_DONTWAIT): the bytes read, 0 when
// none have arrived yet. The descriptors that came with them are appended to `fds` (opened
// close-on-exec; the caller owns them, also when an error is returned). UNAVAILABLE when the
// peer closed the connection or the read failed; DATA_LOSS when more than kMaxFrameDescriptors
// (framing.h) came (the kernel dropped the rest).
absl::StatusOr<size_t> ReceiveWithDescriptors(int fd, void* buffer, size_t size,
                                              std::vector<int>& fds);

}  // namespace cnp
