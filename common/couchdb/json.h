// The few JSON operations the upload needs on top of rapidjson: compact text, parsing with a
// message a user can act on, and equality that ignores the order of object members (CouchDB
// does not keep it, so a reordered object is not a change).
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "absl/status/statusor.h"
#include "rapidjson/document.h"

namespace cnp::couchdb {

std::string ToJson(const rapidjson::Value& value);

// As deep as the service's other JSON parsers go (the worker's and the CouchDB session's).
inline constexpr int kMaxJsonDepth = 4096;

// Refuses text nested deeper than kMaxJsonDepth and text that is not valid UTF-8.
absl::StatusOr<rapidjson::Document> ParseJson(absl::string_view text);

bool JsonEqual(const rapidjson::Value& a, const rapidjson::Value& b);

// A JSON string's text, all of it. JSON strings may hold U+0000 ("victim\u0000evil" is a
// valid document id), where GetString() taken as a C string stops: read that way, one id
// would stand for another.
inline absl::string_view StringView(const rapidjson::Value& string) {
  return absl::string_view(string.GetString(), string.GetStringLength());
}

// The string member `field` of `object`, whole; empty when absent or not a string.
absl::string_view StringMember(const rapidjson::Value& object, const char* field);

// A string value holding all of `text`, copied (rapidjson's Value(const char*) stops at a NUL).
rapidjson::Value StringValue(absl::string_view text,
                             rapidjson::MemoryPoolAllocator<>& allocator);

}  // namespace cnp::couchdb
