#include "service/common/framing.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cnp {
namespace {

absl::Status WriteAll(int fd, const char* data, size_t size, absl::Time deadline) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n > 0) {
      data += n;
      size -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (absl::Status s = WaitForFd(fd, POLLOUT, deadline); !s.ok()) return s;
      continue;
    }
    return absl::UnavailableError(absl::StrCat("write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status ReadAll(int fd, char* data, size_t size, absl::Time deadline) {
  while (size > 0) {
    ssize_t n = ::read(fd, data, size);
    if (n > 0) {
      data += n;
      size -= static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return absl::UnavailableError("the peer closed the connection");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (absl::Status s = WaitForFd(fd, POLLIN, deadline); !s.ok()) return s;
      continue;
    }
    return absl::UnavailableError(absl::StrCat("read failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WaitForFd(int fd, short events, absl::Time deadline) {
  for (;;) {
    int timeout_ms = -1;
    if (deadline != absl::InfiniteFuture()) {
      absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError("deadline passed waiting for the peer");
      }
      timeout_ms = static_cast<int>(absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))));
    }
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, timeout_ms);
    if (n > 0) return absl::OkStatus();  // readable, writable, or HUP/ERR: the I/O call tells
    if (n < 0 && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat("poll failed: ", std::strerror(errno)));
    }
  }
}

absl::Status WriteFrame(int fd, absl::string_view payload, absl::Time deadline) {
  if (payload.size() > kMaxFrameBytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("message of ", payload.size(), " bytes is over the 1 GiB frame limit"));
  }
  char header[kFrameHeaderBytes];
  EncodeFrameLength(static_cast<uint32_t>(payload.size()), header);
  // One write for small frames keeps the common case to a single system call.
  if (payload.size() <= 4096) {
    char buf[kFrameHeaderBytes + 4096];
    std::memcpy(buf, header, kFrameHeaderBytes);
    std::memcpy(buf + kFrameHeaderBytes, payload.data(), payload.size());
    return WriteAll(fd, buf, kFrameHeaderBytes + payload.size(), deadline);
  }
  if (absl::Status s = WriteAll(fd, header, kFrameHeaderBytes, deadline); !s.ok()) return s;
  return WriteAll(fd, payload.data(), payload.size(), deadline);
}

absl::Status WriteFrameWithDescriptors(int fd, absl::string_view payload,
                                       const std::vector<int>& descriptors, absl::Time deadline) {
  if (descriptors.empty()) return WriteFrame(fd, payload, deadline);
  if (descriptors.size() > kMaxFrameDescriptors) {
    return absl::InvalidArgumentError(absl::StrCat("a frame carries at most ",
                                                   kMaxFrameDescriptors, " descriptors, not ",
                                                   descriptors.size()));
  }
  if (payload.size() > kMaxFrameBytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("message of ", payload.size(), " bytes is over the 1 GiB frame limit"));
  }
  char header[kFrameHeaderBytes];
  EncodeFrameLength(static_cast<uint32_t>(payload.size()), header);
  iovec parts[2] = {{header, sizeof header},
                    {const_cast<char*>(payload.data()), payload.size()}};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFrameDescriptors)] = {};
  msghdr message{};
  message.msg_iov = parts;
  message.msg_iovlen = 2;
  message.msg_control = control;
  message.msg_controllen = CMSG_SPACE(sizeof(int) * descriptors.size());
  cmsghdr* rights = CMSG_FIRSTHDR(&message);
  rights->cmsg_level = SOL_SOCKET;
  rights->cmsg_type = SCM_RIGHTS;
  rights->cmsg_len = CMSG_LEN(sizeof(int) * descriptors.size());
  std::memcpy(CMSG_DATA(rights), descriptors.data(), sizeof(int) * descriptors.size());

  // The descriptors go with the first byte; whatever a short send leaves goes as plain bytes.
  ssize_t sent;
  for (;;) {
    sent = ::sendmsg(fd, &message, MSG_NOSIGNAL);
    if (sent >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (absl::Status s = WaitForFd(fd, POLLOUT, deadline); !s.ok()) return s;
      continue;
    }
    return absl::UnavailableError(absl::StrCat("sendmsg failed: ", std::strerror(errno)));
  }
  size_t done = static_cast<size_t>(sent);
  if (done < sizeof header) {
    if (absl::Status s = WriteAll(fd, header + done,
                                  sizeof header - done, deadline);
        !s.ok()) {
      return s;
    }
    done = sizeof header;
  }
  done -= sizeof header;
  return WriteAll(fd, payload.data() + done, payload.size() - done, deadline);
}

absl::Status ReadFrame(int fd, std::string& payload, absl::Time deadline) {
  char header[kFrameHeaderBytes];
  if (absl::Status s = ReadAll(fd, header, kFrameHeaderBytes, deadline); !s.ok()) return s;
  const uint32_t n = DecodeFrameLength(header);
  if (n > kMaxFrameBytes) {
    return absl::DataLossError(absl::StrCat("frame length ", n, " is over the 1 GiB limit"));
  }
  payload.resize(n);
  return ReadAll(fd, payload.data(), n, deadline);
}

}  // namespace cnp
