#include "common/couchdb/large_numbers.h"

namespace cnp::couchdb {
namespace {

// Past these rapidjson may refuse a number (it does past 308 integer digits or an exponent of
// more than 308); quoting a few numbers it would have read costs nothing but a string event.
constexpr size_t kMaxPlainIntegerDigits = 300;
constexpr int kMaxPlainExponent = 300;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNumberByte(char c) {
  return IsDigit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

// The length of the well-formed JSON number at the front of `text` (rapidjson's reading:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?), or 0 when it is not one; `large` says
// whether rapidjson might refuse it.
size_t NumberLength(std::string_view text, bool& large) {
  size_t i = 0;
  if (i < text.size() && text[i] == '-') ++i;
  const size_t digits_from = i;
  if (i < text.size() && text[i] == '0') {
    ++i;
  } else {
    while (i < text.size() && IsDigit(text[i])) ++i;
  }
  if (i == digits_from) return 0;
  large = i - digits_from > kMaxPlainIntegerDigits;
  if (i < text.size() && text[i] == '.') {
    ++i;
    const size_t fraction_from = i;
    while (i < text.size() && IsDigit(text[i])) ++i;
    if (i == fraction_from) return 0;
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    bool negative = false;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) negative = text[i++] == '-';
    const size_t exponent_from = i;
    int exponent = 0;
    while (i < text.size() && IsDigit(text[i])) {
      if (exponent < kMaxPlainExponent) exponent = exponent * 10 + (text[i] - '0');
      ++i;
    }
    if (i == exponent_from) return 0;
    if (!negative && exponent >= kMaxPlainExponent) large = true;
  }
  return i;
}

}  // namespace

QuotedNumbers QuoteLargeNumbers(std::string_view json) {
  QuotedNumbers quoted;
  quoted.text.assign(json);
  std::string& text = quoted.text;
  // The containers open at the walk's place ('[' or '{'), and whether an object's key comes
  // next (after '{' or ','): a number there must stay a number, for rapidjson to refuse it.
  std::string open;
  bool key_next = false;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '"') {
      for (++i; i < text.size() && text[i] != '"'; ++i) {
        if (text[i] == '\\') ++i;
      }
      ++i;  // past the closing quote
      continue;
    }
    if (c == '-' || IsDigit(c)) {
      bool large = false;
      const size_t length = NumberLength(std::string_view(text).substr(i), large);
      const bool key_place = !open.empty() && open.back() == '{' && key_next;
      if (length == 0) {
        // Not a number: rapidjson stops there. Its run of number bytes is skipped whole, so
        // that no byte is walked twice.
        while (i < text.size() && IsNumberByte(text[i])) ++i;
        continue;
      }
      if (large && !key_place) {  // a large number is never shorter than 5 bytes ("1e300")
        text[i] = '"';
        text[i + length - 1] = '"';
        quoted.spans.push_back({i, i + length});
      }
      i += length;
      continue;
    }
    if (c == '[' || c == '{') {
      open.push_back(c);
      key_next = c == '{';
    } else if (c == ']' || c == '}') {
      if (!open.empty()) open.pop_back();
      key_next = false;
    } else if (c == ',') {
      key_next = !open.empty() && open.back() == '{';
    } else if (c == ':') {
      key_next = false;
    }
    ++i;
  }
  return quoted;
}

}  // namespace cnp::couchdb
