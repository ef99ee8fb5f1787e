#include "client/cli/json_input.h"

#include <cctype>
#include <iostream>
#include <iterator>
#include <sstream>

#include "absl/strings/str_cat.h"
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

void SkipSpace(rapidjson::StringStream& stream) {
  while (std::isspace(static_cast<unsigned char>(stream.Peek()))) stream.Take();
}

// Parses the JSON value at the stream's position and returns its text as written; the stream is
// left just after it. `text` is what the stream reads, for the positions in errors.
absl::StatusOr<std::string> TakeValue(const std::string& text, rapidjson::StringStream& stream) {
  const size_t start = stream.Tell();
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
    return absl::InvalidArgumentError(
        absl::StrCat("invalid JSON at ", Position(text, reader.GetErrorOffset()), ": ",
                     rapidjson::GetParseError_En(reader.GetParseErrorCode())));
  }
  return text.substr(start, stream.Tell() - start);
}

// The elements of `array`, a valid JSON array, each as written. Each is parsed on its own, so
// that its end is where the reader stopped (a handler sees a string's or number's end only on a
// copy of the stream).
std::vector<std::string> Elements(const std::string& array) {
  std::vector<std::string> elements;
  rapidjson::StringStream stream(array.c_str());
  stream.Take();  // '['
  for (;;) {
    SkipSpace(stream);
    if (stream.Peek() == ']' || stream.Peek() == '\0') break;
    absl::StatusOr<std::string> element = TakeValue(array, stream);
    if (!element.ok()) break;  // cannot happen: the array parsed as a whole
    elements.push_back(*std::move(element));
    SkipSpace(stream);
    if (stream.Peek() == ',') stream.Take();
  }
  return elements;
}

}  // namespace

absl::StatusOr<std::string> ReadInput(const std::string& path) {
  if (path == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  return ReadFileText(path);
}

absl::StatusOr<std::vector<std::string>> SplitJsonValues(const std::string& text,
                                                         bool spread_array) {
  // Values are cut out of the text, not re-serialised, so numbers beyond 64 bits and every
  // other detail reach the service exactly as written.
  std::vector<std::string> values;
  rapidjson::StringStream stream(text.c_str());
  for (;;) {
    SkipSpace(stream);
    if (stream.Peek() == '\0') break;
    absl::StatusOr<std::string> value = TakeValue(text, stream);
    if (!value.ok()) return value.status();
    values.push_back(*std::move(value));
  }
  if (spread_array && values.size() == 1 && values[0].front() == '[') return Elements(values[0]);
  return values;
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
