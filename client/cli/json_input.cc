#include "client/cli/json_input.h"

#include <cctype>
#include <cstdint>
#include <iostream>
#include <iterator>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/couchdb/large_numbers.h"
#include "common/file_text.h"
#include "rapidjson/reader.h"
#include "rapidjson/error/en.h"

namespace cnp::cli {
namespace {

std::string Position(const std::string& text, size_t offset) {
  size_t line = 1, column = 1;
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return absl::StrCat("line ", line, ", column ", column);
}

// Bounds the nesting of what the reader parses: it recurses once per level, and stopping it
// past kMaxJsonDepth keeps the stack from running out.
class DepthLimit : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, DepthLimit> {
 public:
  bool too_deep() const { return too_deep_; }
  bool StartObject() { return Open(); }
  bool StartArray() { return Open(); }
  bool EndObject(rapidjson::SizeType) { return Close(); }
  bool EndArray(rapidjson::SizeType) { return Close(); }

 private:
  bool Open() {
    if (++depth_ > kMaxJsonDepth) {
      too_deep_ = true;
      return false;  // stops the parse
    }
    return true;
  }
  bool Close() {
    --depth_;
    return true;
  }

  int depth_ = 0;
  bool too_deep_ = false;
};

// JSON's whitespace only: isspace() also took form feeds and vertical tabs, which no JSON
// reader accepts between values.
void SkipSpace(rapidjson::StringStream& stream) {
  for (char c = stream.Peek(); c == ' ' || c == '\t' || c == '\n' || c == '\r'; c = stream.Peek()) {
    stream.Take();
  }
}

// Where a value lies in the text: [begin, end).
struct Span {
  size_t begin = 0;
  size_t end = 0;
};

// Parses the JSON value at the stream's position and returns where it lies; the stream is left
// just after it. The stream reads from offset `base` of the text, or of a copy of it whose
// numbers past a double's range are quoted (the same length: large_numbers.h); `text` is the
// text itself, for the positions in errors. `too_big`, if given, is set when rapidjson refused
// such a number.
absl::StatusOr<Span> TakeValue(const std::string& text, rapidjson::StringStream& stream, size_t base,
                               bool* too_big) {
  const size_t start = base + stream.Tell();
  DepthLimit handler;
  rapidjson::Reader reader;
  // (The iterative parser would report a closing bracket before taking it.)
  reader.Parse<rapidjson::kParseStopWhenDoneFlag | rapidjson::kParseNumbersAsStringsFlag>(
      stream, handler);
  if (handler.too_deep()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid JSON at ", Position(text, reader.GetErrorOffset()), ": nested deeper than ",
        kMaxJsonDepth, " levels, which cnp-server refuses too"));
  }
  if (reader.HasParseError()) {
    if (too_big != nullptr) *too_big = reader.GetParseErrorCode() == rapidjson::kParseErrorNumberTooBig;
    // A value cut short on its line (NDJSON) is noticed where the next one begins: say where
    // the broken value starts too.
    const std::string at = Position(text, base + reader.GetErrorOffset());
    const std::string began = Position(text, start);
    const bool same_line = at.substr(0, at.find(',')) == began.substr(0, began.find(','));
    return absl::InvalidArgumentError(
        absl::StrCat("invalid JSON at ", at, ": ",
                     rapidjson::GetParseError_En(reader.GetParseErrorCode()),
                     same_line ? "" : absl::StrCat(" (in the value that starts at ", began, ")")));
  }
  return Span{start, base + stream.Tell()};
}

// The elements of the valid JSON array at `begin` of `readable` (see TakeValue). Each is parsed
// on its own, so that its end is where the reader stopped (a handler sees a string's or
// number's end only on a copy of the stream).
std::vector<Span> Elements(const std::string& text, const std::string& readable, size_t begin) {
  std::vector<Span> elements;
  rapidjson::StringStream stream(readable.c_str() + begin);
  stream.Take();  // '['
  for (;;) {
    SkipSpace(stream);
    if (stream.Peek() == ']' || stream.Peek() == '\0') break;
    absl::StatusOr<Span> element = TakeValue(text, stream, begin, nullptr);
    if (!element.ok()) break;  // cannot happen: the array parsed as a whole
    elements.push_back(*element);
    SkipSpace(stream);
    if (stream.Peek() == ',') stream.Take();
  }
  return elements;
}

// SplitJsonValues, reading `readable`: `text` itself or its copy with large numbers quoted.
absl::StatusOr<std::vector<std::string>> Split(const std::string& text, const std::string& readable,
                                               bool spread_array, bool* too_big) {
  std::vector<Span> spans;
  rapidjson::StringStream stream(readable.c_str());
  // A byte order mark, which editors on some systems write first, is not JSON but says nothing.
  if (absl::StartsWith(readable, "\xEF\xBB\xBF")) {
    for (int i = 0; i < 3; ++i) stream.Take();
  }
  for (;;) {
    SkipSpace(stream);
    if (stream.Peek() == '\0') break;
    absl::StatusOr<Span> value = TakeValue(text, stream, 0, too_big);
    if (!value.ok()) return value.status();
    spans.push_back(*value);
  }
  // The stream ends at the first NUL byte: one before the text's end is not its end, and what
  // follows it would be dropped without a word.
  if (stream.Tell() < readable.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid JSON at ", Position(text, stream.Tell()), ": a NUL byte"));
  }
  if (spread_array && spans.size() == 1 && text[spans[0].begin] == '[') {
    spans = Elements(text, readable, spans[0].begin);
  }
  // Values are cut out of the text, not re-serialised, so numbers beyond 64 bits and every
  // other detail reach the service exactly as written.
  std::vector<std::string> values;
  for (const Span& span : spans) values.push_back(text.substr(span.begin, span.end - span.begin));
  return values;
}

}  // namespace

absl::StatusOr<std::string> ReadInput(const std::string& path) {
  // No more than one call can carry (the client library's message limit): read whole, a
  // larger input (or /dev/zero) only took memory until it ran out.
  constexpr int64_t kMaxInputBytes = int64_t{256} << 20;
  std::string text;
  if (path == "-") {
    char chunk[64 * 1024];
    while (static_cast<int64_t>(text.size()) <= kMaxInputBytes &&
           std::cin.read(chunk, sizeof chunk).gcount() > 0) {
      text.append(chunk, static_cast<size_t>(std::cin.gcount()));
    }
  } else {
    absl::StatusOr<std::string> read = ReadFileText(path, kMaxInputBytes);
    if (!read.ok()) return read.status();
    text = *std::move(read);
  }
  if (static_cast<int64_t>(text.size()) > kMaxInputBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        path == "-" ? "stdin" : path, " is larger than ", kMaxInputBytes >> 20,
        " MiB, more than one call to cnp-server can carry: split it"));
  }
  return text;
}

absl::StatusOr<std::vector<std::string>> SplitJsonValues(const std::string& text,
                                                         bool spread_array) {
  bool too_big = false;
  absl::StatusOr<std::vector<std::string>> values = Split(text, text, spread_array, &too_big);
  if (values.ok() || !too_big) return values;
  // A number past a double's range (a 401-digit integer, which CouchDB stores and cnp-server
  // reads exactly), which rapidjson refuses even as text: read again from a copy with such
  // numbers quoted, which has every other byte (and error) where the text has it.
  const couchdb::QuotedNumbers quoted = couchdb::QuoteLargeNumbers(text);
  return Split(text, quoted.text, spread_array, nullptr);
}

absl::StatusOr<std::string> SingleJsonValue(const std::string& text) {
  absl::StatusOr<std::vector<std::string>> values = SplitJsonValues(text, false);
  if (!values.ok()) return values.status();
  if (values->size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected one JSON value, found ", values->size()));
  }
  return (*values)[0];
}

}  // namespace cnp::cli
