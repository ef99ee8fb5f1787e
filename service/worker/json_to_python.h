// JSON text -> Python objects, built straight from a rapidjson SAX parse (no intermediate DOM).
//
// Fidelity: integers of any size become exact ints, numbers with a fraction or exponent become
// floats parsed exactly as float() would, strings are decoded exactly (astral-plane characters
// and escapes included), objects become dicts (a repeated key keeps its last value, as
// json.loads does).
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "service/worker/py_ref.h"

namespace cnp::worker {

// Objects and arrays nested deeper than this are refused rather than risking the stack later.
inline constexpr int kMaxJsonDepth = 4096;

// Parses `json` in place (the buffer is overwritten, which saves copying every string).
// Requires the GIL. INVALID_ARGUMENT names rapidjson's error and the byte offset;
// RESOURCE_EXHAUSTED means a MemoryError (the worker is then marked for recycling).
absl::StatusOr<PyRef> ParseJsonInPlace(std::string& json);

// What a document's parse saw: its top-level "_id" (CouchDB writes it first), and whether it
// failed only for being nested deeper than kMaxJsonDepth (valid JSON Python is not given).
struct DocumentSeen {
  std::string id;
  bool too_deep = false;
};
// ParseJsonInPlace for a document, telling what it saw, also when it fails.
absl::StatusOr<PyRef> ParseDocumentInPlace(std::string& json, DocumentSeen& seen);

// The first JSON value of `json`, parsed in place as ParseJsonInPlace does; `end` is set to the
// byte after it. What follows the value is not read (the caller's: a CouchDB line's closing
// bracket). On a failure `end` is where the reader stopped.
absl::StatusOr<PyRef> ParseJsonValueInPlace(std::string& json, size_t& end);

// Same as ParseJsonInPlace, for text that must not be modified (copies it first).
absl::StatusOr<PyRef> ParseJson(absl::string_view json);

}  // namespace cnp::worker
