#include "service/rpc/wire_shape.h"

#include <algorithm>
#include <limits>
#include <string>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace cnp::rpc {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::io::CodedInputStream;
using google::protobuf::internal::WireFormatLite;

// Deeper than any of our requests nests, as deep as protobuf's own parser goes.
constexpr int kMaxDepth = 100;

const char* WireTypeName(int wire_type) {
  switch (wire_type) {
    case WireFormatLite::WIRETYPE_VARINT: return "a varint";
    case WireFormatLite::WIRETYPE_FIXED64: return "8 fixed bytes";
    case WireFormatLite::WIRETYPE_LENGTH_DELIMITED: return "length-delimited bytes";
    case WireFormatLite::WIRETYPE_START_GROUP: return "a group's start";
    case WireFormatLite::WIRETYPE_END_GROUP: return "a group's end";
    case WireFormatLite::WIRETYPE_FIXED32: return "4 fixed bytes";
    default: return "no wire type there is";
  }
}

WireFormatLite::WireType WireTypeOf(const FieldDescriptor& field) {
  return WireFormatLite::WireTypeForFieldType(
      static_cast<WireFormatLite::FieldType>(field.type()));
}

class WireScan {
 public:
  WireScan(CodedInputStream& input, absl::Span<const RepeatedFieldCap> caps)
      : input_(input), caps_(caps) {}

  // The fields up to the current limit (or the end), those of a `type` message.
  absl::Status Message(const Descriptor& type, int depth) {
    // Elements of each repeated field so far, by the field's index in `type`.
    absl::InlinedVector<int64_t, 16> counts(static_cast<size_t>(type.field_count()), 0);
    // Runs of one field (a request's documents, its names) look the field up once.
    int number = 0;
    const FieldDescriptor* field = nullptr;
    const RepeatedFieldCap* cap = nullptr;
    for (;;) {
      const uint32_t tag = input_.ReadTag();
      if (tag == 0) {
        // The end, unless a zero tag or an end inside a nested message's length.
        if (!input_.ConsumedEntireMessage() || input_.BytesUntilLimit() > 0) return Broken();
        return absl::OkStatus();
      }
      const int wire_type = static_cast<int>(WireFormatLite::GetTagWireType(tag));
      const int tag_number = WireFormatLite::GetTagFieldNumber(tag);
      // No field is numbered 0: one byte (0x01) would otherwise pass for the field last looked
      // up, none yet at the start of a message.
      if (tag_number == 0) return Broken();
      if (field == nullptr || tag_number != number) {
        number = tag_number;
        field = type.FindFieldByNumber(number);
        if (field == nullptr) {
          return absl::InvalidArgumentError(absl::StrCat(
              type.full_name(), " has no field ", number,
              " (cnp-server refuses fields it does not know; is the client built from a "
              "newer proto/cnp/v1?)"));
        }
        cap = field->is_repeated() ? CapOf(*field) : nullptr;
      }
      const int expected = WireTypeOf(*field);
      const bool packed = field->is_packable() &&
                          wire_type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED &&
                          expected != WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
      if (wire_type != expected && !packed) {
        return absl::InvalidArgumentError(
            absl::StrCat("field ", number, " (", field->name(), ") of ", type.full_name(),
                         " came as ", WireTypeName(wire_type), ", not as ",
                         WireTypeName(expected), " as its type is sent"));
      }
      int64_t elements = 1;
      if (packed) {
        if (!SkipPacked(expected, elements)) return Broken();
      } else if (!SkipValue(*field, wire_type, depth)) {
        if (!nested_.ok()) return std::move(nested_);
        return Broken();
      }
      if (!field->is_repeated()) continue;
      int64_t& count = counts[static_cast<size_t>(field->index())];
      count += elements;
      if (cap != nullptr) {
        if (count > cap->most) return cap->refusal(cap->most);
      } else {
        uncapped_ += elements;
      }
    }
  }

  int64_t uncapped() const { return uncapped_; }

 private:
  const RepeatedFieldCap* CapOf(const FieldDescriptor& field) const {
    for (const RepeatedFieldCap& cap : caps_) {
      if (cap.field == &field) return &cap;
    }
    return nullptr;
  }

  // One value of `field` sent as `wire_type` (its own): false when the bytes break, or when a
  // nested message is refused (then nested_ says why).
  bool SkipValue(const FieldDescriptor& field, int wire_type, int depth) {
    switch (wire_type) {
      case WireFormatLite::WIRETYPE_VARINT: {
        uint64_t value;
        return input_.ReadVarint64(&value);
      }
      case WireFormatLite::WIRETYPE_FIXED64: {
        uint64_t value;
        return input_.ReadLittleEndian64(&value);
      }
      case WireFormatLite::WIRETYPE_FIXED32: {
        uint32_t value;
        return input_.ReadLittleEndian32(&value);
      }
      case WireFormatLite::WIRETYPE_LENGTH_DELIMITED: {
        uint32_t length;
        if (!input_.ReadVarint32(&length) ||
            length > static_cast<uint32_t>(std::numeric_limits<int>::max())) {
          return false;
        }
        if (field.type() != FieldDescriptor::TYPE_MESSAGE) {
          return input_.Skip(static_cast<int>(length));
        }
        if (depth + 1 >= kMaxDepth) {
          nested_ = absl::InvalidArgumentError(
              absl::StrCat("its messages nest deeper than ", kMaxDepth));
          return false;
        }
        const CodedInputStream::Limit limit = input_.PushLimit(static_cast<int>(length));
        nested_ = Message(*field.message_type(), depth + 1);
        input_.PopLimit(limit);
        return nested_.ok();
      }
      case WireFormatLite::WIRETYPE_START_GROUP:
        return WireFormatLite::SkipField(&input_, WireFormatLite::MakeTag(
                                                      field.number(), WireFormatLite::WIRETYPE_START_GROUP));
      default:
        return false;
    }
  }

  // A packed run of scalars whose own wire type is `element_type`: counts them.
  bool SkipPacked(int element_type, int64_t& elements) {
    uint32_t length;
    if (!input_.ReadVarint32(&length) ||
        length > static_cast<uint32_t>(std::numeric_limits<int>::max())) {
      return false;
    }
    if (element_type != WireFormatLite::WIRETYPE_VARINT) {
      const uint32_t width = element_type == WireFormatLite::WIRETYPE_FIXED64 ? 8 : 4;
      if (length % width != 0) return false;
      elements = length / width;
      return input_.Skip(static_cast<int>(length));
    }
    const CodedInputStream::Limit limit = input_.PushLimit(static_cast<int>(length));
    elements = 0;
    bool whole = true;
    while (whole && input_.BytesUntilLimit() > 0) {
      uint64_t value;
      whole = input_.ReadVarint64(&value);
      ++elements;
    }
    input_.PopLimit(limit);
    return whole;
  }

  absl::Status Broken() const {
    return absl::InvalidArgumentError(absl::StrCat(
        "its bytes are no protobuf message: they break off or go wrong by byte ",
        input_.CurrentPosition()));
  }

  CodedInputStream& input_;
  const absl::Span<const RepeatedFieldCap> caps_;
  int64_t uncapped_ = 0;
  absl::Status nested_;
};

}  // namespace

absl::Status CheckWireShape(const Descriptor& type,
                            google::protobuf::io::ZeroCopyInputStream& wire,
                            absl::Span<const RepeatedFieldCap> caps) {
  CodedInputStream input(&wire);
  input.SetTotalBytesLimit(std::numeric_limits<int>::max());
  WireScan scan(input, caps);
  if (absl::Status shaped = scan.Message(type, 0); !shaped.ok()) return shaped;
  const int64_t bytes = input.CurrentPosition();
  const int64_t allowed =
      std::max(kUncappedElementsFloor, bytes / kWireBytesPerUncappedElement);
  if (scan.uncapped() > allowed) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the request holds ", scan.uncapped(), " elements of repeated fields in ", bytes,
        " bytes, more than the ", allowed, " cnp-server parses in a request of that size"));
  }
  return absl::OkStatus();
}

}  // namespace cnp::rpc
