#include "service/http2_guard/frame_guard.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace cnp::http2_guard {
namespace {

constexpr absl::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// RFC 9113's frame types and flags the guard reads.
constexpr unsigned char kData = 0x0, kHeaders = 0x1, kRstStream = 0x3, kSettings = 0x4,
                        kPing = 0x6, kContinuation = 0x9;
constexpr unsigned char kAck = 0x1, kEndStream = 0x1, kEndHeaders = 0x4;

uint32_t LengthOf(const unsigned char* header) {
  return (uint32_t{header[0]} << 16) | (uint32_t{header[1]} << 8) | header[2];
}

uint32_t StreamOf(const unsigned char* header) {
  return ((uint32_t{header[5]} & 0x7f) << 24) | (uint32_t{header[6]} << 16) |
         (uint32_t{header[7]} << 8) | header[8];
}

}  // namespace

template <typename OnFrame>
void FrameGuard::FrameReader::Read(absl::string_view bytes, OnFrame frame) {
  while (!bytes.empty()) {
    if (payload_left > 0) {
      const size_t n = std::min<uint64_t>(payload_left, bytes.size());
      payload_left -= n;
      bytes.remove_prefix(n);
      continue;
    }
    const size_t n = std::min(sizeof header - header_read, bytes.size());
    std::copy_n(bytes.data(), n, header + header_read);
    header_read += n;
    bytes.remove_prefix(n);
    if (header_read == sizeof header) {
      header_read = 0;
      payload_left = LengthOf(header);
      frame(header);
    }
  }
}

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
  if (preface_left_ > 0 && broken_.empty() && !not_http2_) {
    const size_t n = std::min(preface_left_, bytes.size());
    const size_t at = kPreface.size() - preface_left_;
    if (bytes.substr(0, n) != kPreface.substr(at, n)) {
      // Not HTTP/2 from its first bytes: gRPC refuses it, and closes the connection, itself.
      not_http2_ = true;
    }
    preface_left_ -= n;
    bytes.remove_prefix(n);
  }
  if (broken_.empty() && !not_http2_) {
    client_.Read(bytes, [&](const unsigned char* header) {
      if (broken_.empty()) ClientFrame(header, now);
    });
  }
  return broken_;
}

void FrameGuard::Wrote(absl::string_view bytes) {
  server_.Read(bytes, [&](const unsigned char* header) { ServerFrame(header); });
}

void FrameGuard::ClientFrame(const unsigned char* header, absl::Time now) {
  const uint32_t length = LengthOf(header);
  const unsigned char type = header[3];
  const unsigned char flags = header[4];
  const uint32_t stream = StreamOf(header);
  if (type == kHeaders || type == kContinuation) {
    header_block_bytes_ = (type == kHeaders ? 0 : header_block_bytes_) + length;
    in_header_block_ = (flags & kEndHeaders) == 0;
    if (header_block_bytes_ > limits_.max_header_block_bytes) {
      broken_ = absl::StrCat("sent a header block of more than ", limits_.max_header_block_bytes,
                             " bytes");
      return;
    }
  }
  // The client's side of a call ends with END_STREAM: its request has come whole, and cnp has
  // the call (or gRPC has refused it).
  if ((type == kData || type == kHeaders) && (flags & kEndStream) != 0) awaiting_.erase(stream);
  if (type == kHeaders && stream > last_stream_) {
    last_stream_ = stream;
    if ((flags & kEndStream) == 0) awaiting_.insert(stream);
    if (!settings_acked_ && ++streams_before_ack_ > limits_.streams_before_settings_ack) {
      broken_ = absl::StrCat("opened more than ", limits_.streams_before_settings_ack,
                             " streams without acknowledging the server's SETTINGS");
    }
    return;
  }
  if (type == kSettings) {
    if ((flags & kAck) != 0) {
      settings_acked_ = settings_acked_ || server_spoke_;
    } else if (settings_.Take(now)) {
      ++unacknowledged_;
    } else {
      broken_ = "sent SETTINGS frames faster than any client needs";
    }
  } else if (type == kPing && (flags & kAck) == 0) {
    if (pings_.Take(now)) {
      ++unacknowledged_;
    } else {
      broken_ = "sent PING frames faster than any client needs";
    }
  } else if (type == kRstStream) {
    awaiting_.erase(stream);
    if (!resets_.Take(now)) broken_ = "reset streams faster than any client needs (rapid reset)";
  }
}

// The server's headers on a call (its answer begins, or a status ends it) or its reset: cnp has
// the call, or gRPC is done with it. (A stream call, which cnp has from its headers on, awaits
// until its first answer; cnp's clients open one or two at a time on a connection.) Its PING
// or SETTINGS acknowledgement answers one of the client's frames (the acknowledgements of its
// own come from the client, and are not counted).
void FrameGuard::ServerFrame(const unsigned char* header) {
  const unsigned char type = header[3];
  if (type == kHeaders || type == kRstStream) awaiting_.erase(StreamOf(header));
  if ((type == kPing || type == kSettings) && (header[4] & kAck) != 0 && unacknowledged_ > 0) {
    --unacknowledged_;
  }
}

}  // namespace cnp::http2_guard
