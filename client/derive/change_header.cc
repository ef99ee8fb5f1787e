#include "client/derive/change_header.h"

#include "absl/strings/str_cat.h"
#include "rapidjson/encodings.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"
#include "common/couchdb/json.h"

namespace cnp::derive {
namespace {

bool IsUtf8(absl::string_view text) {
  rapidjson::MemoryStream in(text.data(), text.size());
  unsigned code_point = 0;
  while (in.Tell() < text.size()) {
    if (!rapidjson::UTF8<>::Decode(in, &code_point)) return false;
  }
  return true;
}

std::string StringJson(absl::string_view text) {
  rapidjson::Value value(rapidjson::StringRef(text.data(), text.size()));
  return couchdb::ToJson(value);
}

// Follows the nesting with a depth counter and keeps the "seq" and "id" members of the one
// object wanted; stops (returns false) as soon as it has both or that object has ended.
class HeaderHandler : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, HeaderHandler> {
 public:
  explicit HeaderHandler(ChangeText kind) : kind_(kind), target_depth_(kind == ChangeText::kRow ? 1 : 3) {}

  bool Null() { return Scalar(""); }
  bool Bool(bool) { return Scalar(""); }
  bool Int(int) { return Scalar(""); }
  bool Uint(unsigned) { return Scalar(""); }
  bool Int64(int64_t) { return Scalar(""); }
  bool Uint64(uint64_t) { return Scalar(""); }
  bool Double(double) { return Scalar(""); }
  bool RawNumber(const char* text, rapidjson::SizeType length, bool) {
    if (InTarget() && key_ == "seq") seq_json_ = std::string(text, length);
    return !Found();
  }
  bool String(const char* text, rapidjson::SizeType length, bool) {
    if (InTarget() && key_ == "seq") seq_json_ = IsUtf8({text, length}) ? StringJson({text, length}) : "";
    if (InTarget() && key_ == "id") {
      id_ = std::string(text, length);
      has_id_ = IsUtf8(id_);
    }
    return !Found();
  }
  bool Key(const char* text, rapidjson::SizeType length, bool) {
    if (depth_ == 1 || InTarget()) key_.assign(text, length);
    return !Found();
  }
  bool StartObject() {
    if (kind_ == ChangeText::kRow && depth_ == 0) in_target_ = true;
    if (kind_ == ChangeText::kFirstResult && depth_ == 2 && in_results_ && !target_done_) in_target_ = true;
    ++depth_;
    return !Found();
  }
  bool EndObject(rapidjson::SizeType) {
    --depth_;
    if (in_target_ && depth_ == target_depth_ - 1) {
      in_target_ = false;
      target_done_ = true;
      return false;
    }
    return true;
  }
  bool StartArray() {
    if (kind_ == ChangeText::kFirstResult && depth_ == 1 && key_ == "results") in_results_ = true;
    ++depth_;
    return !Found();
  }
  bool EndArray(rapidjson::SizeType) {
    --depth_;
    if (depth_ == 1) in_results_ = false;
    return !target_done_;
  }

  bool Found() const { return !seq_json_.empty() && has_id_; }
  std::optional<ChangeHeader> Header() const {
    if (!Found()) return std::nullopt;
    return ChangeHeader{seq_json_, id_};
  }

 private:
  bool InTarget() const { return in_target_ && depth_ == target_depth_; }
  bool Scalar(const char*) { return !Found(); }

  const ChangeText kind_;
  const int target_depth_;  // where the wanted object's members are
  int depth_ = 0;           // containers open
  std::string key_;         // the last member name at depth 1 or in the wanted object
  bool in_results_ = false;
  bool in_target_ = false;
  bool target_done_ = false;
  std::string seq_json_;
  std::string id_;
  bool has_id_ = false;
};

}  // namespace

std::optional<ChangeHeader> ScanChangeHeader(absl::string_view text, ChangeText kind) {
  HeaderHandler handler(kind);
  rapidjson::MemoryStream in(text.data(), text.size());
  rapidjson::Reader reader;
  // Iterative: the reader's own stack grows on the heap, not the thread's stack. Not validating
  // the encoding: invalid UTF-8 in the document is one reason to be here; seq and id are checked.
  reader.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseNumbersAsStringsFlag>(in, handler);
  return handler.Header();
}

std::string UnreadableChangeJson(const ChangeHeader& header, absl::string_view why) {
  return absl::StrCat("{\"seq\":", header.seq_json, ",\"id\":", StringJson(header.id), ",\"",
                      kUnreadableMember, "\":", StringJson(why), "}");
}

}  // namespace cnp::derive
