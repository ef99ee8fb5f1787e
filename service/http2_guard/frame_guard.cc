#include "service/http2_guard/frame_guard.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace cnp::http2_guard {
namespace {

constexpr absl::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// RFC 9113's frame types and flags the guard reads.
constexpr unsigned char kHeaders = 0x1, kRstStream = 0x3, kSettings = 0x4, kPing = 0x6,
                        kContinuation = 0x9;
constexpr unsigned char kAck = 0x1, kEndHeaders = 0x4;

}  // namespace

bool FrameGuard::Bucket::Take(absl::Time now) {
  if (refilled_ != absl::InfinitePast()) {
    tokens_ = std::min<double>(burst_, tokens_ + absl::ToDoubleSeconds(now - refilled_) *
                                                     per_second_);
  }
  refilled_ = now;
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

std::string FrameGuard::Read(absl::string_view bytes, absl::Time now) {
  while (!bytes.empty() && broken_.empty() && !not_http2_) {
    if (preface_left_ > 0) {
      const size_t n = std::min(preface_left_, bytes.size());
      const size_t at = kPreface.size() - preface_left_;
      if (bytes.substr(0, n) != kPreface.substr(at, n)) {
        // Not HTTP/2 from its first bytes: gRPC refuses it, and closes the connection, itself.
        not_http2_ = true;
        break;
      }
      preface_left_ -= n;
      bytes.remove_prefix(n);
      continue;
    }
    if (payload_left_ > 0) {
      const size_t n = std::min<uint64_t>(payload_left_, bytes.size());
      payload_left_ -= n;
      bytes.remove_prefix(n);
      continue;
    }
    const size_t n = std::min(sizeof header_ - header_read_, bytes.size());
    std::copy_n(bytes.data(), n, header_ + header_read_);
    header_read_ += n;
    bytes.remove_prefix(n);
    if (header_read_ == sizeof header_) {
      header_read_ = 0;
      Frame(now);
    }
  }
  return broken_;
}

void FrameGuard::Frame(absl::Time now) {
  const uint32_t length = (uint32_t{header_[0]} << 16) | (uint32_t{header_[1]} << 8) | header_[2];
  const unsigned char type = header_[3];
  const unsigned char flags = header_[4];
  const uint32_t stream = ((uint32_t{header_[5]} & 0x7f) << 24) | (uint32_t{header_[6]} << 16) |
                          (uint32_t{header_[7]} << 8) | header_[8];
  payload_left_ = length;
  if (type == kHeaders || type == kContinuation) {
    header_block_bytes_ = (type == kHeaders ? 0 : header_block_bytes_) + length;
    in_header_block_ = (flags & kEndHeaders) == 0;
    if (header_block_bytes_ > limits_.max_header_block_bytes) {
      broken_ = absl::StrCat("sent a header block of more than ", limits_.max_header_block_bytes,
                             " bytes");
      return;
    }
  }
  if (type == kHeaders && stream > last_stream_) {
    last_stream_ = stream;
    if (!settings_acked_ && ++streams_before_ack_ > limits_.streams_before_settings_ack) {
      broken_ = absl::StrCat("opened more than ", limits_.streams_before_settings_ack,
                             " streams without acknowledging the server's SETTINGS");
    }
    return;
  }
  if (type == kSettings) {
    if ((flags & kAck) != 0) {
      settings_acked_ = settings_acked_ || server_spoke_;
    } else if (!settings_.Take(now)) {
      broken_ = "sent SETTINGS frames faster than any client needs";
    }
  } else if (type == kPing && (flags & kAck) == 0 && !pings_.Take(now)) {
    broken_ = "sent PING frames faster than any client needs";
  } else if (type == kRstStream && !resets_.Take(now)) {
    broken_ = "reset streams faster than any client needs (rapid reset)";
  }
}

}  // namespace cnp::http2_guard
