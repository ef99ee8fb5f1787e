#include "service/worker/frame_reader.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "service/common/framing.h"

namespace cnp::worker {

FrameReader::~FrameReader() {
  for (const ArrivedDescriptors& arrived : pending_) {
    for (int fd : arrived.fds) ::close(fd);
  }
}

absl::Status FrameReader::ReadSome(char* into, size_t size, size_t& got) {
  for (;;) {
    ssize_t n;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFrameDescriptors)];
    msghdr message{};
    if (plain_reads_) {
      n = ::read(fd_, into, size);
    } else {
      iovec part{into, size};
      message.msg_iov = &part;
      message.msg_iovlen = 1;
      message.msg_control = control;
      message.msg_controllen = sizeof control;
      n = ::recvmsg(fd_, &message, MSG_CMSG_CLOEXEC);
      if (n < 0 && errno == ENOTSOCK) {
        plain_reads_ = true;
        continue;
      }
    }
    if (n > 0) {
      got = static_cast<size_t>(n);
      received_ += got;
      if (plain_reads_) return absl::OkStatus();
      std::vector<int> fds;
      for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
          fds.push_back(fd);
        }
      }
      if ((message.msg_flags & MSG_CTRUNC) != 0) {
        for (int fd : fds) ::close(fd);
        return absl::DataLossError(absl::StrCat("a frame came with more than ",
                                                kMaxFrameDescriptors, " descriptors"));
      }
      if (!fds.empty()) pending_.push_back({received_, std::move(fds)});
      return absl::OkStatus();
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return absl::UnavailableError("the peer closed the connection");
    return absl::UnavailableError(absl::StrCat("read failed: ", std::strerror(errno)));
  }
}

void FrameReader::TakeDescriptors(uint64_t frame_end, std::vector<int>* descriptors) {
  while (!pending_.empty() && pending_.front().stream_end <= frame_end) {
    for (int fd : pending_.front().fds) {
      if (descriptors != nullptr) {
        descriptors->push_back(fd);
      } else {
        ::close(fd);
      }
    }
    pending_.pop_front();
  }
}

absl::Status FrameReader::Read(std::string& payload, std::vector<int>* descriptors) {
  if (begin_ == end_) begin_ = end_ = 0;
  if (kBufferBytes - begin_ < kFrameHeaderBytes) {  // too close to the end for a header: compact
    std::memmove(buffer_.get(), buffer_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  while (end_ - begin_ < kFrameHeaderBytes) {
    size_t got;
    if (absl::Status s = ReadSome(buffer_.get() + end_, kBufferBytes - end_, got); !s.ok()) return s;
    end_ += got;
  }
  const uint32_t length = DecodeFrameLength(buffer_.get() + begin_);
  if (length > kMaxFrameBytes) {
    return absl::DataLossError(absl::StrCat("frame length ", length, " is over the 1 GiB limit"));
  }
  begin_ += kFrameHeaderBytes;

  size_t buffered = end_ - begin_;
  if (buffered >= length) {  // the common case: the whole frame came with its header
    payload.assign(buffer_.get() + begin_, length);
    begin_ += length;
    if (!pending_.empty()) TakeDescriptors(received_ - (end_ - begin_), descriptors);
    return absl::OkStatus();
  }
  // A frame bigger than what has arrived: the rest is read straight into the payload, and
  // never past the frame's end, so the buffer is simply empty afterwards.
  payload.resize(length);
  std::memcpy(payload.data(), buffer_.get() + begin_, buffered);
  begin_ = end_ = 0;
  for (size_t have = buffered; have < length;) {
    size_t got;
    if (absl::Status s = ReadSome(payload.data() + have, length - have, got); !s.ok()) return s;
    have += got;
  }
  if (!pending_.empty()) TakeDescriptors(received_, descriptors);
  return absl::OkStatus();
}

}  // namespace cnp::worker
