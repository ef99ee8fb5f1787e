// The few JSON operations the upload needs on top of rapidjson: compact text, parsing with a
// message a user can act on, and equality of content, which ignores the order of object
// members (a reordered object holds the same data; CouchDB keeps the order, and a design
// document's index signature depends on it: see SameIndexInputs). cnp derive, which carries
// documents' data, and the upload's reads of stored documents parse with every number kept
// exactly (ParseJsonExact).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/status/statusor.h"
#include "rapidjson/document.h"

namespace cnp::couchdb {

// Compact JSON text; a kept number (ParseJsonExact) is written as the number it was.
std::string ToJson(const rapidjson::Value& value);

// As deep as the service's other JSON parsers go (the worker's and the CouchDB session's).
inline constexpr int kMaxJsonDepth = 4096;

// Refuses text nested deeper than kMaxJsonDepth and text that is not valid UTF-8.
absl::StatusOr<rapidjson::Document> ParseJson(absl::string_view text);

bool JsonEqual(const rapidjson::Value& a, const rapidjson::Value& b);

// ParseJson's refusals, and every number kept as CouchDB keeps it. rapidjson holds a number as
// an int64, a uint64 or a double, and refuses one past a double's range: but CouchDB stores
// integers of any size (jiffy's bignums) and serves them back digit for digit, so a document's
// 25-digit integer would come back rounded, and its 401-digit one not at all. Here an integer
// that fits 64 bits is an int64 or uint64 as before, any other number that a double holds
// (finite) is that double (correctly rounded), and the rest, integers past 64 bits and numbers
// past a double's range, are kept as their text: a "kept number", which ToJson writes back as
// it was and JsonEqual compares by its text. A kept number is a string value marked by a first
// byte that no valid UTF-8 holds (0xFF), so that no string of a parsed text (its UTF-8 is
// validated) can pass for one; test with IsKeptNumber before reading a value as a string.
//
// `rows_member` and `docs`, when given, ask where the `doc` objects of the elements of the
// top-level array `rows_member` lie in `text` ("results" of a _changes answer): docs[i] is the
// [begin, end) of element i's "doc" object, {0, 0} when it has none. `max_depth` is for text
// built of parts each already checked (their depth plus the levels that hold them).
struct TextSpan {
  size_t begin = 0;
  size_t end = 0;
};
absl::StatusOr<rapidjson::Document> ParseJsonExact(absl::string_view text,
                                                   const char* rows_member = nullptr,
                                                   std::vector<TextSpan>* docs = nullptr,
                                                   int max_depth = kMaxJsonDepth);

// Whether `value` is a kept number (above), and its text as the JSON had it.
bool IsKeptNumber(const rapidjson::Value& value);
absl::string_view KeptNumberText(const rapidjson::Value& value);
// A kept number of `text`, for a number read from other text than JSON (a YAML scalar) that a
// 64-bit integer or a double would change; nullopt when `text` is not a JSON number.
std::optional<rapidjson::Value> KeptNumberValue(absl::string_view text,
                                                rapidjson::MemoryPoolAllocator<>& allocator);

// A JSON string's text, all of it. JSON strings may hold U+0000 ("victim\u0000evil" is a
// valid document id), where GetString() taken as a C string stops: read that way, one id
// would stand for another.
inline absl::string_view StringView(const rapidjson::Value& string) {
  return absl::string_view(string.GetString(), string.GetStringLength());
}

// The string member `field` of `object`, whole; empty when absent or not a string (a kept
// number is none).
absl::string_view StringMember(const rapidjson::Value& object, const char* field);

// A string value holding all of `text`, copied (rapidjson's Value(const char*) stops at a NUL).
rapidjson::Value StringValue(absl::string_view text,
                             rapidjson::MemoryPoolAllocator<>& allocator);

}  // namespace cnp::couchdb
