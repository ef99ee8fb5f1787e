// Reading a whole frame and the descriptors that came with it, blocking: the counterpart of
// WriteFrameWithDescriptors for tests (the server's session listener reads its frames with
// coroutines, service/session/session_listener.cc).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace cnp::testing {

// Reads one frame and the descriptors that came with it (opened close-on-exec; the caller owns
// them, also when an error is returned after they arrived), waiting with poll(). Errors as
// ReadFrame's; more than kMaxFrameDescriptors descriptors is DATA_LOSS.
absl::Status ReadFrameWithDescriptors(int fd, std::string& payload, std::vector<int>& fds,
                                      absl::Time deadline = absl::InfiniteFuture());

}  // namespace cnp::testing
