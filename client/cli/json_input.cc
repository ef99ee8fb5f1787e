#include "client/cli/json_input.h"

#include <cctype>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "absl/strings/str_cat.h"
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

// Records where each element of a top-level array ends (the stream position after it).
class ElementEnds : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, ElementEnds> {
 public:
  ElementEnds(rapidjson::StringStream& stream, std::vector<size_t>& ends)
      : stream_(stream), ends_(ends) {}
  bool top_is_array() const { return top_is_array_; }
  bool too_deep() const { return too_deep_; }

  bool Default() { return Scalar(); }
  bool RawNumber(const char*, rapidjson::SizeType, bool) { return Scalar(); }
  bool String(const char*, rapidjson::SizeType, bool) { return Scalar(); }
  bool StartObject() { return Open(false); }
  bool StartArray() { return Open(true); }
  bool Key(const char*, rapidjson::SizeType, bool) { return true; }
  bool EndObject(rapidjson::SizeType) { return Close(); }
  bool EndArray(rapidjson::SizeType) { return Close(); }

 private:
  bool Scalar() {
    if (depth_ == 1) ends_.push_back(stream_.Tell());
    return true;
  }
  bool Open(bool array) {
    if (depth_ == 0) top_is_array_ = array;
    if (++depth_ > kMaxJsonDepth) {
      too_deep_ = true;
      return false;  // stops the parse
    }
    return true;
  }
  bool Close() {
    --depth_;
    return Scalar();
  }

  rapidjson::StringStream& stream_;
  std::vector<size_t>& ends_;
  int depth_ = 0;
  bool top_is_array_ = false;
  bool too_deep_ = false;
};

}  // namespace

absl::StatusOr<std::string> ReadInput(const std::string& path) {
  if (path == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

absl::StatusOr<std::vector<std::string>> SplitJsonValues(const std::string& text,
                                                         bool spread_array) {
  // Values are cut out of the text, not re-serialised, so numbers beyond 64 bits and every
  // other detail reach the service exactly as written.
  std::vector<std::string> values;
  std::vector<size_t> element_ends;  // of the elements of a top-level array
  rapidjson::StringStream stream(text.c_str());
  for (;;) {
    while (std::isspace(static_cast<unsigned char>(stream.Peek()))) stream.Take();
    if (stream.Peek() == '\0') break;
    const size_t start = stream.Tell();
    ElementEnds handler(stream, element_ends);
    element_ends.clear();
    rapidjson::Reader reader;
    // The parser recurses once per level, but the handler stops it past kMaxJsonDepth, before
    // the stack could run out. (The iterative parser would report a closing bracket before
    // taking it, and the element ends would come out one byte short.)
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
    values.push_back(text.substr(start, stream.Tell() - start));
    while (std::isspace(static_cast<unsigned char>(stream.Peek()))) stream.Take();
    if (spread_array && handler.top_is_array() && stream.Peek() == '\0' && values.size() == 1) {
      values.clear();
      size_t from = start + 1;  // after '['
      for (size_t end : element_ends) {
        while (from < end && (std::isspace(static_cast<unsigned char>(text[from])) || text[from] == ',')) {
          ++from;
        }
        values.push_back(text.substr(from, end - from));
        from = end;
      }
      break;
    }
  }
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
