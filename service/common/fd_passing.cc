#include "service/common/fd_passing.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cnp {
namespace {

// The control buffer for up to kMaxFrameDescriptors descriptors, aligned for cmsghdr.
union ControlBuffer {
  char bytes[CMSG_SPACE(sizeof(int) * kMaxFrameDescriptors)];
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
        return absl::DataLossError(absl::StrCat("more than ", kMaxFrameDescriptors,
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

}  // namespace cnp
