#include "common/couchdb/json.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/couchdb/large_numbers.h"
#include "rapidjson/error/en.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cnp::couchdb {
namespace {

// rapidjson reads a NUL byte as the end of the text, so "{...}\0anything" parsed as the value
// before it, and the rest went unread (a security review); JSON text holds none.
absl::Status NoNulByte(absl::string_view text) {
  const void* nul = std::memchr(text.data(), '\0', text.size());
  if (nul == nullptr) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "not valid JSON (a NUL byte at offset ", static_cast<const char*>(nul) - text.data(),
      ", which JSON text never holds; a string writes it \\u0000)"));
}

// The first byte of a kept number's string: never part of valid UTF-8.
constexpr char kKeptNumberMark = '\xff';

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Whether `text` is one whole JSON number, -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?: what
// the writer may put in the output unquoted.
bool IsJsonNumber(absl::string_view text) {
  size_t i = 0;
  auto digits = [&] {
    const size_t from = i;
    while (i < text.size() && IsDigit(text[i])) ++i;
    return i > from;
  };
  if (i < text.size() && text[i] == '-') ++i;
  if (i < text.size() && text[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == text.size();
}

// rapidjson's writer, but a kept number is written as its number.
class ExactWriter : public rapidjson::Writer<rapidjson::StringBuffer> {
 public:
  using Writer::Writer;
  bool String(const char* text, rapidjson::SizeType length, bool copy = false) {
    if (length > 1 && text[0] == kKeptNumberMark && IsJsonNumber({text + 1, length - 1})) {
      return RawValue(text + 1, length - 1, rapidjson::kNumberType);
    }
    return Writer::String(text, length, copy);
  }
};

}  // namespace

std::string ToJson(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  ExactWriter writer(buffer);
  value.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

bool IsKeptNumber(const rapidjson::Value& value) {
  return value.IsString() && value.GetStringLength() > 1 && value.GetString()[0] == kKeptNumberMark;
}

std::optional<rapidjson::Value> KeptNumberValue(absl::string_view text,
                                                rapidjson::MemoryPoolAllocator<>& allocator) {
  if (!IsJsonNumber(text)) return std::nullopt;
  std::string kept(1, kKeptNumberMark);
  kept.append(text.data(), text.size());
  return rapidjson::Value(kept.data(), static_cast<rapidjson::SizeType>(kept.size()), allocator);
}

absl::string_view KeptNumberText(const rapidjson::Value& value) {
  if (!IsKeptNumber(value)) return {};
  return StringView(value).substr(1);
}

absl::string_view StringMember(const rapidjson::Value& object, const char* field) {
  if (!object.IsObject()) return {};
  auto it = object.FindMember(field);
  if (it == object.MemberEnd() || !it->value.IsString() || IsKeptNumber(it->value)) return {};
  return StringView(it->value);
}

rapidjson::Value StringValue(absl::string_view text,
                             rapidjson::MemoryPoolAllocator<>& allocator) {
  return rapidjson::Value(text.data(), static_cast<rapidjson::SizeType>(text.size()), allocator);
}

namespace {

// Whether arrays and objects in `text` nest deeper than `max` (strings skipped). Checked before
// parsing because the tree would be walked recursively afterwards (diff, writer, equality).
bool NestsDeeperThan(absl::string_view text, int max) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<rapidjson::Document> ParseJson(absl::string_view text) {
  if (absl::Status nul = NoNulByte(text); !nul.ok()) return nul;
  if (NestsDeeperThan(text, kMaxJsonDepth)) {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON nested deeper than ", kMaxJsonDepth, " levels"));
  }
  rapidjson::Document doc;
  // Iterative: the parser's own recursion is not bounded by the check above for every input.
  doc.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(text.data(),
                                                                                    text.size());
  if (doc.HasParseError()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON (", rapidjson::GetParseError_En(doc.GetParseError()),
                     " at offset ", doc.GetErrorOffset(), ")"));
  }
  return doc;
}

namespace {

// Builds a Document from the reader's events with numbers read from their text (the reader
// hands them over as text): each as ParseJsonExact says. On a second reading, of a copy whose
// numbers rapidjson refused are quoted (large_numbers.h), a string at a quoted number's place
// is that number, read from the original text. Optionally notes where the `doc` objects of the
// rows array lie.
class ExactBuilder {
 public:
  ExactBuilder(rapidjson::Document& doc, const rapidjson::MemoryStream& stream,
               absl::string_view original, const std::vector<NumberSpan>* quoted,
               const char* rows_member, std::vector<TextSpan>* docs)
      : doc_(doc), stream_(stream), original_(original), quoted_(quoted),
        rows_member_(rows_member), docs_(docs) {}

  bool Null() { return Element() && doc_.Null(); }
  bool Bool(bool b) { return Element() && doc_.Bool(b); }
  bool Int(int i) { return Element() && doc_.Int(i); }
  bool Uint(unsigned u) { return Element() && doc_.Uint(u); }
  bool Int64(int64_t i) { return Element() && doc_.Int64(i); }
  bool Uint64(uint64_t u) { return Element() && doc_.Uint64(u); }
  bool Double(double d) { return Element() && doc_.Double(d); }
  bool RawNumber(const char* text, rapidjson::SizeType length, bool) {
    return Element() && Number({text, length});
  }
  bool String(const char* text, rapidjson::SizeType length, bool copy) {
    Element();
    // The reader has just taken the closing quote: a quoted number ends here. Strings come in
    // the order of the text, so only the next quoted number can be this one.
    if (quoted_ != nullptr && next_quoted_ < quoted_->size() &&
        (*quoted_)[next_quoted_].end == stream_.Tell()) {
      const NumberSpan& span = (*quoted_)[next_quoted_++];
      return Number(original_.substr(span.begin, span.end - span.begin));
    }
    return doc_.String(text, length, copy);
  }
  bool Key(const char* text, rapidjson::SizeType length, bool copy) {
    if (depth_ == 1 || depth_ == 3) key_.assign(text, length);
    return doc_.Key(text, length, copy);
  }
  bool StartObject() {
    Element();
    // The iterative reader calls this with the '{' still ahead of it.
    if (in_rows_ && depth_ == 3 && key_ == "doc") doc_begin_ = stream_.Tell();
    ++depth_;
    return doc_.StartObject();
  }
  bool EndObject(rapidjson::SizeType members) {
    --depth_;
    if (in_rows_ && depth_ == 3 && key_ == "doc") {
      // The '}' is still ahead here too.
      (*docs_)[docs_->size() - 1] = TextSpan{doc_begin_, stream_.Tell() + 1};
    }
    if (depth_ == 2) key_.clear();  // the next element's members are its own
    return doc_.EndObject(members);
  }
  bool StartArray() {
    Element();
    if (depth_ == 1 && docs_ != nullptr && rows_member_ != nullptr && key_ == rows_member_) in_rows_ = true;
    ++depth_;
    return doc_.StartArray();
  }
  bool EndArray(rapidjson::SizeType elements) {
    --depth_;
    if (depth_ == 1) in_rows_ = false;
    return doc_.EndArray(elements);
  }

 private:
  // A value begins: an element of the rows array gets its (empty) place in `docs`. Always true,
  // for the callers' `&&`.
  bool Element() {
    if (in_rows_ && depth_ == 2) docs_->emplace_back();
    return true;
  }
  bool Number(absl::string_view text) {
    if (text.find_first_of(".eE") == absl::string_view::npos) {
      int64_t i = 0;
      if (absl::SimpleAtoi(text, &i)) return doc_.Int64(i);
      uint64_t u = 0;
      if (absl::SimpleAtoi(text, &u)) return doc_.Uint64(u);
    } else if (double d = 0; absl::SimpleAtod(text, &d) && std::isfinite(d)) {
      return doc_.Double(d);
    }
    kept_.assign(1, kKeptNumberMark);
    kept_.append(text.data(), text.size());
    return doc_.String(kept_.data(), static_cast<rapidjson::SizeType>(kept_.size()), true);
  }

  rapidjson::Document& doc_;
  const rapidjson::MemoryStream& stream_;
  const absl::string_view original_;
  const std::vector<NumberSpan>* const quoted_;
  size_t next_quoted_ = 0;
  const char* const rows_member_;
  std::vector<TextSpan>* const docs_;
  int depth_ = 0;
  std::string key_;  // the last member name of the top-level object or of a row
  bool in_rows_ = false;
  size_t doc_begin_ = 0;
  std::string kept_;
};

}  // namespace

absl::StatusOr<rapidjson::Document> ParseJsonExact(absl::string_view text, const char* rows_member,
                                                   std::vector<TextSpan>* docs, int max_depth) {
  if (absl::Status nul = NoNulByte(text); !nul.ok()) return nul;
  if (NestsDeeperThan(text, max_depth)) {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON nested deeper than ", max_depth, " levels"));
  }
  constexpr unsigned kFlags = rapidjson::kParseIterativeFlag |
                              rapidjson::kParseValidateEncodingFlag |
                              rapidjson::kParseNumbersAsStringsFlag;
  rapidjson::Document doc;
  rapidjson::ParseResult result;
  auto read = [&](absl::string_view json, const std::vector<NumberSpan>* quoted) {
    if (docs != nullptr) docs->clear();
    rapidjson::MemoryStream stream(json.data(), json.size());
    ExactBuilder builder(doc, stream, text, quoted, rows_member, docs);
    auto generate = [&](rapidjson::Document& target) {
      (void)target;  // the builder fills it
      rapidjson::Reader reader;
      result = reader.Parse<kFlags>(stream, builder);
      return !result.IsError();
    };
    doc.Populate(generate);
  };
  read(text, nullptr);
  if (result.Code() == rapidjson::kParseErrorNumberTooBig) {
    // Refused even as text (large_numbers.h): read again with those numbers quoted.
    const QuotedNumbers quoted = QuoteLargeNumbers(std::string_view(text.data(), text.size()));
    read(quoted.text, &quoted.spans);
  }
  if (result.IsError()) {
    if (result.Code() == rapidjson::kParseErrorStringInvalidEncoding) {
      return absl::InvalidArgumentError(
          absl::StrCat("a string that is not valid UTF-8 (at byte ", result.Offset(), ")"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON (", rapidjson::GetParseError_En(result.Code()),
                     " at offset ", result.Offset(), ")"));
  }
  return doc;
}

namespace {

// Whether two numbers have the same value: 1 and 1.0 are the same number to CouchDB, -1 and
// 2^64 - 1 are not (rapidjson's == compares two integers' 64-bit patterns), nor is an integer
// past a double's precision the double nearest to it.
bool SameNumber(const rapidjson::Value& a, const rapidjson::Value& b) {
  if (a.IsDouble() && b.IsDouble()) return a.GetDouble() == b.GetDouble();
  if (!a.IsDouble() && !b.IsDouble()) {
    if (a.IsInt64() && b.IsInt64()) return a.GetInt64() == b.GetInt64();
    if (a.IsUint64() && b.IsUint64()) return a.GetUint64() == b.GetUint64();
    return false;  // one negative, the other past INT64_MAX
  }
  const double x = a.IsDouble() ? a.GetDouble() : b.GetDouble();
  const rapidjson::Value& integer = a.IsDouble() ? b : a;
  if (x != std::trunc(x)) return false;
  if (integer.IsInt64()) {
    // [-2^63, 2^63): converted back exactly, or not the same.
    return x >= -9223372036854775808.0 && x < 9223372036854775808.0 &&
           static_cast<int64_t>(x) == integer.GetInt64();
  }
  return x >= 0 && x < 18446744073709551616.0 && static_cast<uint64_t>(x) == integer.GetUint64();
}

}  // namespace

bool JsonEqual(const rapidjson::Value& a, const rapidjson::Value& b) {
  if (a.IsNumber() && b.IsNumber()) return SameNumber(a, b);
  if (a.GetType() != b.GetType()) return false;
  if (a.IsObject()) {
    if (a.MemberCount() != b.MemberCount()) return false;
    for (const auto& member : a.GetObject()) {
      auto other = b.FindMember(member.name);
      if (other == b.MemberEnd() || !JsonEqual(member.value, other->value)) return false;
    }
    return true;
  }
  if (a.IsArray()) {
    if (a.Size() != b.Size()) return false;
    for (rapidjson::SizeType i = 0; i < a.Size(); ++i) {
      if (!JsonEqual(a[i], b[i])) return false;
    }
    return true;
  }
  return a == b;
}

}  // namespace cnp::couchdb
