// Frames (service/common/framing.h) that carry open descriptors (SCM_RIGHTS): how CouchDB's
// pipes travel from cnp-adapter to cnp-server and on to a worker for a direct session.
//
// The descriptors ride on the frame's first byte, so a reader that uses recvmsg() for its first
// read of a frame gets them with that frame; the rest is an ordinary frame.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace cnp {

// Most descriptors one frame may carry (a direct session passes two).
inline constexpr int kMaxFramedDescriptors = 4;

// Writes one frame with `fds` attached (duplicated into the receiver; the caller keeps and
// still owns its copies). `fd` must be a unix stream socket; it may be non-blocking, then the
// write waits with poll() until `deadline`.
absl::Status WriteFrameWithDescriptors(int fd, absl::string_view payload,
                                       absl::Span<const int> fds,
                                       absl::Time deadline = absl::InfiniteFuture());

// Reads one frame and the descriptors that came with it (opened close-on-exec; the caller owns
// them, also when an error is returned after they arrived). Errors as ReadFrame's; more than
// kMaxFramedDescriptors descriptors is DATA_LOSS.
absl::Status ReadFrameWithDescriptors(int fd, std::string& payload, std::vector<int>& fds,
                                      absl::Time deadline = absl::InfiniteFuture());

}  // namespace cnp
