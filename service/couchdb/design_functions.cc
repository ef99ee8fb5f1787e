#include "service/couchdb/design_functions.h"

#include <array>
#include <optional>

#include "absl/strings/str_cat.h"
#include "rapidjson/error/en.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "common/couchdb/large_numbers.h"

namespace cnp::couchdb {
namespace {

// The top-level members that name functions (the sections a ddoc call can address).
constexpr std::array<std::string_view, 7> kFunctionSections = {
    "filters", "lists", "rewrites", "shows", "updates", "validate_doc_update", "views"};

bool IsFunctionSection(std::string_view name) {
  for (std::string_view section : kFunctionSections) {
    if (name == section) return true;
  }
  return false;
}

// rapidjson's events for one design document, turned into its functions. Objects on the way to
// a function are entered (their keys make the path); any other value is read past, counting
// only its nesting. Runs with rapidjson's iterative parser: no recursion per level of nesting.
class FunctionFinder : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, FunctionFinder> {
 public:
  FunctionFinder(const rapidjson::MemoryStream& stream, const std::vector<NumberSpan>* quoted,
                 DesignFunctionVisitor visit)
      : stream_(stream), quoted_(quoted), visit_(visit) {}

  bool Default() { return in_root_; }  // a scalar: no function (but no document either)
  bool Key(const char* text, rapidjson::SizeType length, bool) {
    if (skipping_ == 0) key_.assign(text, length);
    return true;
  }
  bool String(const char* text, rapidjson::SizeType length, bool) {
    if (!in_root_) return false;
    if (skipping_ > 0 || !Wanted() || IsQuotedNumber()) return true;
    path_.push_back(key_);
    const bool go_on = visit_(path_, std::string_view(text, length));
    path_.pop_back();
    if (!go_on) stopped_ = true;
    return go_on;
  }
  bool StartObject() {
    if (skipping_ > 0) {
      ++skipping_;
    } else if (!in_root_) {
      in_root_ = true;
    } else if (Wanted() && path_.size() + 1 < kMaxDesignFunctionPath) {
      path_.push_back(key_);  // its strings are at most kMaxDesignFunctionPath keys deep
    } else {
      skipping_ = 1;
    }
    return true;
  }
  bool EndObject(rapidjson::SizeType) {
    if (skipping_ > 0) {
      --skipping_;
    } else if (!path_.empty()) {
      path_.pop_back();
    }
    return true;
  }
  // No function path goes through an array (CouchDB's array-form rewrites run in Erlang).
  bool StartArray() {
    if (!in_root_) return false;
    ++skipping_;
    return true;
  }
  bool EndArray(rapidjson::SizeType) {
    --skipping_;
    return true;
  }

  bool stopped() const { return stopped_; }
  bool in_root() const { return in_root_; }

 private:
  // A value under the current key is on a function's path: the key names a function section,
  // or the current object is inside one (objects outside them are never entered).
  bool Wanted() const { return !path_.empty() || IsFunctionSection(key_); }
  // A string token that is a number past a double's range, quoted for rapidjson
  // (large_numbers.h): its closing quote is where the reader stands.
  bool IsQuotedNumber() {
    if (quoted_ == nullptr) return false;
    const size_t end = stream_.Tell();
    while (next_quoted_ < quoted_->size() && (*quoted_)[next_quoted_].end < end) ++next_quoted_;
    return next_quoted_ < quoted_->size() && (*quoted_)[next_quoted_].end == end;
  }

  const rapidjson::MemoryStream& stream_;
  const std::vector<NumberSpan>* quoted_;
  DesignFunctionVisitor visit_;
  bool in_root_ = false;
  int skipping_ = 0;                // nesting inside a value read past
  std::string key_;                 // the last key of the current object
  std::vector<std::string> path_;   // the keys of the objects entered below the root
  size_t next_quoted_ = 0;
  bool stopped_ = false;
};

constexpr unsigned kFlags = rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag;

// One pass over `json` (or its copy with large numbers quoted); nullopt when rapidjson refused
// a number too big for it.
std::optional<absl::Status> ReadOnce(std::string_view json, const QuotedNumbers* quoted,
                                     DesignFunctionVisitor visit) {
  rapidjson::MemoryStream stream(json.data(), json.size());
  FunctionFinder finder(stream, quoted == nullptr ? nullptr : &quoted->spans, visit);
  rapidjson::Reader reader;
  const rapidjson::ParseResult result = reader.Parse<kFlags>(stream, finder);
  if (!result.IsError() || finder.stopped()) return absl::OkStatus();
  if (result.Code() == rapidjson::kParseErrorNumberTooBig && quoted == nullptr) return std::nullopt;
  if (result.Code() == rapidjson::kParseErrorTermination && !finder.in_root()) {
    return absl::InvalidArgumentError("not a JSON object");
  }
  return absl::InvalidArgumentError(absl::StrCat("not valid JSON: ",
                                                 rapidjson::GetParseError_En(result.Code()),
                                                 " at byte ", result.Offset()));
}

}  // namespace

absl::Status ReadDesignFunctions(std::string_view json, DesignFunctionVisitor visit) {
  size_t shown = 0;
  auto counted = [&](const std::vector<std::string>& path, std::string_view name) {
    ++shown;
    return visit(path, name);
  };
  if (std::optional<absl::Status> read = ReadOnce(json, nullptr, counted)) return *read;
  // A number rapidjson would not read: the document is read again with such numbers quoted.
  // That copy gives the same events at the same offsets up to the number, so the functions
  // shown before it come first again, and are not shown twice.
  const QuotedNumbers quoted = QuoteLargeNumbers(json);
  size_t skipped = 0;
  auto rest = [&](const std::vector<std::string>& path, std::string_view name) {
    if (skipped < shown) {
      ++skipped;
      return true;
    }
    return visit(path, name);
  };
  return ReadOnce(quoted.text, &quoted, rest).value_or(absl::OkStatus());
}

absl::StatusOr<std::string> DesignFunctionsJson(std::string_view json) {
  rapidjson::StringBuffer text;
  rapidjson::Writer<rapidjson::StringBuffer> writer(text);
  writer.StartObject();
  // The objects open in `writer` below the root: a function whose path shares them is written
  // into them, so consecutive functions of one section share its object, as in `json`.
  std::vector<std::string> open;
  absl::Status read = ReadDesignFunctions(
      json, [&](const std::vector<std::string>& path, std::string_view name) {
        const size_t objects = path.size() - 1;
        size_t shared = 0;
        while (shared < open.size() && shared < objects && open[shared] == path[shared]) {
          ++shared;
        }
        for (; open.size() > shared; open.pop_back()) writer.EndObject();
        for (; open.size() < objects; open.push_back(path[open.size()])) {
          writer.Key(path[open.size()].data(), path[open.size()].size());
          writer.StartObject();
        }
        writer.Key(path.back().data(), path.back().size());
        writer.String(name.data(), name.size());
        return true;
      });
  if (!read.ok()) return read;
  for (; !open.empty(); open.pop_back()) writer.EndObject();
  writer.EndObject();
  return std::string(text.GetString(), text.GetSize());
}

}  // namespace cnp::couchdb
