#include "service/worker/frame_reader.h"

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "service/common/framing.h"

namespace cnp::worker {
namespace {

constexpr size_t kHeaderBytes = 4;

}  // namespace

absl::Status FrameReader::ReadSome(char* into, size_t size, size_t& got) {
  for (;;) {
    ssize_t n = ::read(fd_, into, size);
    if (n > 0) {
      got = static_cast<size_t>(n);
      return absl::OkStatus();
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return absl::UnavailableError("the peer closed the connection");
    return absl::UnavailableError(absl::StrCat("read failed: ", std::strerror(errno)));
  }
}

absl::Status FrameReader::Read(std::string& payload) {
  if (begin_ == end_) begin_ = end_ = 0;
  if (kBufferBytes - begin_ < kHeaderBytes) {  // too close to the end for a header: compact
    std::memmove(buffer_.get(), buffer_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  while (end_ - begin_ < kHeaderBytes) {
    size_t got;
    if (absl::Status s = ReadSome(buffer_.get() + end_, kBufferBytes - end_, got); !s.ok()) return s;
    end_ += got;
  }
  const auto* header = reinterpret_cast<const unsigned char*>(buffer_.get() + begin_);
  uint32_t length = header[0] | (header[1] << 8) | (header[2] << 16) | (uint32_t{header[3]} << 24);
  if (length > kMaxFrameBytes) {
    return absl::DataLossError(absl::StrCat("frame length ", length, " is over the 1 GiB limit"));
  }
  begin_ += kHeaderBytes;

  size_t buffered = end_ - begin_;
  if (buffered >= length) {  // the common case: the whole frame came with its header
    payload.assign(buffer_.get() + begin_, length);
    begin_ += length;
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
  return absl::OkStatus();
}

}  // namespace cnp::worker
