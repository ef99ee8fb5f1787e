#include "service/calls/encoded_map_request.h"

#include <cstdint>

#include "cnp/v1/functions.pb.h"
#include "google/protobuf/wire_format_lite.h"

namespace cnp::calls {

using google::protobuf::internal::WireFormatLite;

EncodedMapRequest::EncodedMapRequest(std::string_view bytes, size_t max_functions)
    : bytes_(bytes),
      input_(reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<int>(bytes.size())),
      max_functions_(max_functions) {}

std::optional<std::string_view> EncodedMapRequest::Next(std::vector<std::string>* functions) {
  for (;;) {
    const uint32_t tag = input_.ReadTag();
    if (tag == 0) {
      failed_ = !input_.ConsumedEntireMessage();
      return std::nullopt;
    }
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    const bool bytes_field =
        WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
    if (bytes_field && (field == v1::MapRequest::kFunctionsFieldNumber ||
                        field == v1::MapRequest::kDocsFieldNumber)) {
      uint32_t length = 0;
      const bool read = input_.ReadVarint32(&length);
      const int at = input_.CurrentPosition();
      if (!read || !input_.Skip(static_cast<int>(length))) break;
      std::string_view value = bytes_.substr(at, length);
      if (field == v1::MapRequest::kDocsFieldNumber) return value;
      if (!WireFormatLite::VerifyUtf8String(value.data(), static_cast<int>(value.size()),
                                            WireFormatLite::PARSE,
                                            "cnp.v1.MapRequest.functions")) {
        break;
      }
      if (functions != nullptr) {
        if (functions->size() >= max_functions_) {
          too_many_functions_ = true;
          return std::nullopt;
        }
        functions->emplace_back(value);
      }
    } else if (!WireFormatLite::SkipField(&input_, tag)) {
      break;
    }
  }
  failed_ = true;
  return std::nullopt;
}

}  // namespace cnp::calls
