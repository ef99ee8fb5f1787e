#include "service/common/fd_passing.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "service/common/framing.h"

namespace cnp {
namespace {

// The control buffer for up to kMaxFramedDescriptors descriptors, aligned for cmsghdr.
union ControlBuffer {
  char bytes[CMSG_SPACE(sizeof(int) * kMaxFramedDescriptors)];
  cmsghdr align;
};

}  // namespace

absl::StatusOr<size_t> ReceiveWithDescriptors(int fd, void* buffer, size_t size,
                                              std::vector<int>& fds) {
  for (;;) {
    iovec iov{buffer, size};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    ControlBuffer control;
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof control.bytes;
    ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n > 0) {
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
          int received;
          std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
          fds.push_back(received);
        }
      }
      if (msg.msg_flags & MSG_CTRUNC) {
        return absl::DataLossError(absl::StrCat("more than ", kMaxFramedDescriptors,
                                                " descriptors came with one frame"));
      }
      return static_cast<size_t>(n);
    }
    if (n == 0) return absl::UnavailableError("the peer closed the connection");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return absl::UnavailableError(absl::StrCat("recvmsg failed: ", std::strerror(errno)));
  }
}

absl::Status ReadFrameWithDescriptors(int fd, std::string& payload, std::vector<int>& fds,
                                      absl::Time deadline) {
  fds.clear();
  unsigned char header[4];
  size_t got = 0;
  while (got < sizeof header) {
    absl::StatusOr<size_t> n = ReceiveWithDescriptors(fd, header + got, sizeof header - got, fds);
    if (!n.ok()) return n.status();
    got += *n;
    if (*n == 0) {
      if (absl::Status s = WaitForFd(fd, POLLIN, deadline); !s.ok()) return s;
    }
  }
  uint32_t n = header[0] | (header[1] << 8) | (header[2] << 16) | (uint32_t{header[3]} << 24);
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

}  // namespace cnp
