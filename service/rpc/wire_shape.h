// A request's wire form checked against its message type before protobuf builds anything of
// it. gRPC bounds a request by its bytes (--max-call-bytes) and its memory quota
// (--max-grpc-memory) counts only those bytes, but a parsed message can hold far more than its
// bytes: each empty element of a repeated field (two bytes on the wire) becomes an object of
// 40-60 bytes, and each field protobuf does not know is kept as an unknown field of about 20. A
// 66 MB request of either grew cnp-server by 0.6-1.9 GB (a security review). So every request
// is walked once, in place, and refused when
//   - it has a field its type does not (at any depth): INVALID_ARGUMENT naming the type and the
//     field's number. Our clients are built from our protos; a client from a newer proto that
//     sends a field this server does not know is told so rather than having it ignored.
//   - a known field comes with another wire type than its type has: protobuf would keep it as
//     an unknown field too;
//   - a repeated field has more elements than its cap (RepeatedFieldCap, refused as the cap
//     says), or, for repeated fields without one, all of them together more than
//     max(kUncappedElementsFloor, bytes / kWireBytesPerUncappedElement);
//   - its bytes are no message (INVALID_ARGUMENT saying where they break).
// The walk allocates nothing per field and reads each byte once.
//
// Groups (proto2 only; none in our protos) are skipped without looking inside.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/zero_copy_stream.h"

namespace cnp::rpc {

// The most elements `field` may have in one message, and the answer past that.
struct RepeatedFieldCap {
  const google::protobuf::FieldDescriptor* field;
  int64_t most;
  absl::Status (*refusal)(int64_t most);
};

// Repeated fields without a cap bring at most one element per this many wire bytes, counted
// over the whole request, so that what they take once parsed stays within a few times the
// request's bytes...
inline constexpr int64_t kWireBytesPerUncappedElement = 16;
// ...or this many in all, whatever the request's size.
inline constexpr int64_t kUncappedElementsFloor = 1024;

// Walks `wire`, a `type` message, to its end. OK when it may be parsed; otherwise
// INVALID_ARGUMENT saying what is wrong (without naming the request: its caller does), or a
// cap's refusal.
absl::Status CheckWireShape(const google::protobuf::Descriptor& type,
                            google::protobuf::io::ZeroCopyInputStream& wire,
                            absl::Span<const RepeatedFieldCap> caps);

}  // namespace cnp::rpc
