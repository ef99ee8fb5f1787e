#include "tests/common/frame_with_descriptors.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "service/common/fd_passing.h"
#include "service/common/framing.h"

namespace cnp::testing {

absl::Status ReadFrameWithDescriptors(int fd, std::string& payload, std::vector<int>& fds,
                                      absl::Time deadline) {
  fds.clear();
  char header[kFrameHeaderBytes];
  size_t got = 0;
  while (got < sizeof header) {
    absl::StatusOr<size_t> n = ReceiveWithDescriptors(fd, header + got, sizeof header - got, fds);
    if (!n.ok()) return n.status();
    got += *n;
    if (*n == 0) {
      if (absl::Status s = WaitForFd(fd, POLLIN, deadline); !s.ok()) return s;
    }
  }
  const uint32_t n = DecodeFrameLength(header);
  if (n > kMaxFrameBytes) {
    return absl::DataLossError(absl::StrCat("frame length ", n, " is over the 1 GiB limit"));
  }
  payload.resize(n);
  size_t have = 0;
  while (have < n) {
    ssize_t r = ::read(fd, payload.data() + have, n - have);
    if (r > 0) {
      have += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) return absl::UnavailableError("the peer closed the connection mid-frame");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (absl::Status s = WaitForFd(fd, POLLIN, deadline); !s.ok()) return s;
      continue;
    }
    return absl::UnavailableError(absl::StrCat("read failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace cnp::testing
