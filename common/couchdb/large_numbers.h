// Numbers rapidjson will not read, made readable without moving a byte.
//
// rapidjson refuses a number it could not hold in a double (an integer part past DBL_MAX, a
// positive exponent past 308) with kParseErrorNumberTooBig, even when told to hand numbers over
// as text (kParseNumbersAsStringsFlag): the check comes before the flag is looked at. CouchDB
// stores such integers (jiffy keeps them as bignums and writes back the same digits), so one
// document holding one would fail every parse of it. The parsers here read numbers as text and
// never need the double; when rapidjson refuses a number (rare), they read instead a copy in
// which every such number is a JSON string token of the very same length, and turn those
// tokens back into the original digits where they build values. Offsets in that copy are the
// original's, so element slices and error bytes stay right.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace cnp::couchdb {

// [begin, end) of a number token in the text, its quotes included once quoted.
struct NumberSpan {
  size_t begin = 0;
  size_t end = 0;
};

struct QuotedNumbers {
  std::string text;               // the JSON with those numbers quoted, as long as the original
  std::vector<NumberSpan> spans;  // the quoted numbers, in the order they appear
};

// A copy of `json` in which every number rapidjson might refuse (more than 300 digits before
// its fraction, or a positive exponent of 300 or more) that stands where a value may stand is
// a string token of the same length: its first and last bytes become '"'. Numbers that may not
// be refused, object keys' places and anything that is not a well-formed number are left as
// they are, so rapidjson reads the copy exactly as it reads `json` apart from those numbers:
// the same events at the same offsets, and the same error (kind and byte) if `json` has another
// one. Any text is accepted (the walk follows strings and nesting; it checks nothing).
QuotedNumbers QuoteLargeNumbers(std::string_view json);

}  // namespace cnp::couchdb
