// JSON text -> Python objects, built straight from a rapidjson SAX parse (no intermediate DOM).
//
// Fidelity: integers of any size become exact ints, numbers with a fraction or exponent become
// floats parsed exactly as float() would, strings are decoded exactly (astral-plane characters
// and escapes included), objects become dicts (a repeated key keeps its last value, as
// json.loads does).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "service/worker/py_ref.h"

namespace cnp::worker {

// Objects and arrays nested deeper than this are refused rather than risking the stack later.
inline constexpr int kMaxJsonDepth = 4096;

// Parses `json` into Python, working in place in `buffer` (a buffer the caller reuses: `json`
// is copied there and the parse overwrites it, which saves copying every string again).
// Requires the GIL. INVALID_ARGUMENT names rapidjson's error and the byte offset;
// RESOURCE_EXHAUSTED means a MemoryError (the worker is then marked for recycling).
//
// A number rapidjson cannot hold in a double is read all the same (large_numbers.h): an integer
// becomes an int with every digit (up to sys.get_int_max_str_digits() digits, 4300, past which
// int() itself refuses: INVALID_ARGUMENT), a positive exponent past a double's range
// float('inf'), as json.loads reads them.
absl::StatusOr<PyRef> ParseJson(std::string_view json, std::string& buffer);

// The same with a buffer of its own.
absl::StatusOr<PyRef> ParseJson(std::string_view json);

// What a document's parse saw: its top-level "_id" (CouchDB writes it first), and whether it
// failed only for holding valid JSON that Python is not given: nested deeper than
// kMaxJsonDepth, or an integer of more digits than int() converts.
struct DocumentSeen {
  std::string id;
  bool too_deep = false;
  bool too_many_digits = false;
  bool refused_alone() const { return too_deep || too_many_digits; }
};
// ParseJson for a document, telling what it saw, also when it fails.
absl::StatusOr<PyRef> ParseDocument(std::string_view json, std::string& buffer,
                                    DocumentSeen& seen);

// A copy of a value ParseJson built, sharing its immutable parts (str, int, float, bool,
// None) and copying its dicts and lists, for a function that may change its document while
// another must see it as parsed: far cheaper than parsing the text again. A new reference, or
// nullptr with MemoryError set.
PyObject* CopyParsed(PyObject* value);

// The first JSON value of `json`, parsed as ParseJson does; `end` is set to the byte after it.
// What follows the value is not read (the caller's: a CouchDB line's closing bracket). On a
// failure `end` is where the reader stopped.
absl::StatusOr<PyRef> ParseJsonValue(std::string_view json, std::string& buffer, size_t& end);

}  // namespace cnp::worker
