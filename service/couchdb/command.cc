#include "service/couchdb/command.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "rapidjson/error/en.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"
#include "common/couchdb/large_numbers.h"
#include "service/common/absl_view.h"
#include "service/couchdb/design_functions.h"
#include "service/couchdb/json_text.h"

namespace cnp::couchdb {
namespace {

constexpr std::string_view kMapDocPrefix = "[\"map_doc\",";

// JSON's whitespace.
void SkipSpace(std::string_view& text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t' || text.front() == '\r' ||
                           text.front() == '\n')) {
    text.remove_prefix(1);
  }
}

// One JSON string, read without building a document.
class StringReader : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, StringReader> {
 public:
  bool Default() { return false; }  // anything but a string
  bool String(const char* text, rapidjson::SizeType length, bool) {
    value_.assign(text, length);
    return true;
  }
  std::string& value() { return value_; }

 private:
  std::string value_;
};

template <unsigned kFlags = rapidjson::kParseDefaultFlags>
std::optional<std::string> DecodeString(std::string_view json) {
  rapidjson::MemoryStream stream(json.data(), json.size());
  StringReader string;
  rapidjson::Reader reader;
  if (reader.Parse<kFlags>(stream, string).IsError()) return std::nullopt;
  return std::move(string.value());
}

// A string that goes into a worker's task (a function's name, a design document's id or path):
// a protobuf string, which must be UTF-8. One that was not made the task unreadable ("the
// frame is not a Task") instead of being refused here. A command's own name needs no check:
// one that is not UTF-8 is no command's.
std::optional<std::string> DecodeUtf8String(std::string_view json) {
  return DecodeString<rapidjson::kParseValidateEncodingFlag>(json);
}

// A JSON array of at most `max_count` strings, read without building a document (a reduce
// line names its functions in one, a ddoc call its function's path). The reading stops at the
// string past `max_count`: a line of ten million names costs no more than one of `max_count`.
class StringsCollector
    : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, StringsCollector> {
 public:
  explicit StringsCollector(size_t max_count) : max_count_(max_count) {}
  bool Default() { return false; }  // anything but the array and its strings
  bool StartArray() { return ++depth_ == 1; }
  bool EndArray(rapidjson::SizeType) { return --depth_ == 0; }
  bool String(const char* text, rapidjson::SizeType length, bool) {
    if (depth_ != 1) return false;
    if (strings_.size() == max_count_) {
      too_many_ = true;
      return false;
    }
    strings_.emplace_back(text, length);
    return true;
  }
  std::vector<std::string>& strings() { return strings_; }
  bool too_many() const { return too_many_; }

 private:
  const size_t max_count_;
  int depth_ = 0;
  std::vector<std::string> strings_;
  bool too_many_ = false;
};

// Why DecodeStrings gave no strings.
enum class StringsProblem : uint8_t { kNotStrings, kTooMany };

std::variant<std::vector<std::string>, StringsProblem> DecodeStrings(std::string_view json,
                                                                     size_t max_count) {
  rapidjson::MemoryStream stream(json.data(), json.size());
  StringsCollector collector(max_count);
  rapidjson::Reader reader;
  // Function names and a design function's path, for a worker's task: UTF-8, as above.
  if (reader.Parse<rapidjson::kParseValidateEncodingFlag>(stream, collector).IsError()) {
    return collector.too_many() ? StringsProblem::kTooMany : StringsProblem::kNotStrings;
  }
  return std::move(collector.strings());
}

// Takes a JSON string off the front of `text` and decodes it (escapes included, so that
// "map\u005fdoc" is the name every reader sees, not only the ones that decode).
std::optional<std::string> TakeString(std::string_view& text) {
  SkipSpace(text);
  if (text.empty() || text.front() != '"') return std::nullopt;
  bool escaped = false;
  for (size_t i = 1; i < text.size(); ++i) {
    if (text[i] == '\\') {
      escaped = true;
      ++i;
    } else if (text[i] == '"') {
      std::string_view token = text.substr(0, i + 1);
      text.remove_prefix(i + 1);
      if (!escaped) return std::string(token.substr(1, token.size() - 2));
      return DecodeString(token);
    }
  }
  return std::nullopt;
}

// After the name: another element, or the end of the array.
bool AtElementEnd(std::string_view text) {
  SkipSpace(text);
  return !text.empty() && (text.front() == ',' || text.front() == ']');
}

CommandKind KindOfName(std::string_view name) {
  static constexpr CommandKind kNamed[] = {
      CommandKind::kReset,    CommandKind::kAddLib,  CommandKind::kAddFun,
      CommandKind::kMapDoc,   CommandKind::kReduce,  CommandKind::kRereduce,
      CommandKind::kListRow,  CommandKind::kListEnd, CommandKind::kDesignDocCall};
  for (CommandKind kind : kNamed) {
    if (CommandName(kind) == name) return kind;
  }
  return CommandKind::kUnknown;
}

DesignSection SectionOf(std::string_view name) {
  if (name == "validate_doc_update") return DesignSection::kValidateDocUpdate;
  if (name == "filters") return DesignSection::kFilters;
  if (name == "views") return DesignSection::kViews;
  if (name == "shows") return DesignSection::kShows;
  if (name == "updates") return DesignSection::kUpdates;
  if (name == "rewrites") return DesignSection::kRewrites;
  if (name == "lists") return DesignSection::kLists;
  return DesignSection::kUnknown;
}

std::string InvalidJson(size_t offset, rapidjson::ParseErrorCode code) {
  return absl::StrCat("invalid JSON at byte ", offset, ": ", rapidjson::GetParseError_En(code));
}

constexpr std::string_view kNotACommandReason =
    "expected a command: a JSON array starting with a string";

// rapidjson's reader recurses once per level of nesting, on the stack of the thread that reads
// the line (a gRPC thread for a Session stream's client, the adapter's, a session worker's):
// a line nested a million deep would overflow it. The walk stops far below that; no CouchDB
// document or design document comes near it, and the worker refuses values nested deeper than
// 4096 on its own (a bad_input error) long before.
constexpr int kMaxLineDepth = 10'000;

using Elements = std::vector<std::string_view>;

// No command reads past its fourth element (a design document call's arguments); the elements
// after it are walked as JSON but not kept, so that a line of millions of tiny elements
// (["list_row",0,0,...]) costs no more than its bytes.
constexpr size_t kElementsKept = 4;

// Finds the elements of a line's top-level array while rapidjson checks that the line is JSON:
// one walk over the line does both. The elements are slices of the text (found from the
// stream's position at each event), never copied. With `stop_at_third`, the walk ends where
// the third element starts as an array or object, unread (a reduce's values, left to the
// worker).
class ElementFinder
    : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, ElementFinder> {
 public:
  ElementFinder(std::string_view text, const rapidjson::MemoryStream& stream, bool stop_at_third)
      : text_(text), stream_(stream), stop_at_third_(stop_at_third) {}

  // Every scalar (and every object key: a key never sits at the root array's level).
  bool Default() {
    if (InRootArray()) EndElement();
    return true;
  }
  bool StartObject() { return Open(); }
  bool StartArray() {
    if (depth_ == 0) {
      root_is_array_ = true;
      next_ = stream_.Tell();
    }
    return Open();
  }
  bool EndObject(rapidjson::SizeType) { return Close(); }
  bool EndArray(rapidjson::SizeType) { return Close(); }

  bool root_is_array() const { return root_is_array_; }
  bool too_deep() const { return too_deep_; }
  Elements& elements() { return elements_; }
  // Where the walk stopped (stop_at_third): the first byte of the third element.
  std::optional<size_t> stopped_at() const { return stopped_at_; }

 private:
  bool InRootArray() const { return root_is_array_ && depth_ == 1; }
  bool Open() {
    if (InRootArray() && stop_at_third_ && elements_.size() == 2) {
      stopped_at_ = stream_.Tell() - 1;  // the bracket or brace was just read
      return false;
    }
    if (depth_ >= kMaxLineDepth) {
      too_deep_ = true;
      return false;
    }
    ++depth_;
    return true;
  }
  bool Close() {
    --depth_;
    if (InRootArray()) EndElement();
    return true;
  }
  // The element that just ended began after the previous one's comma (the text in between is
  // JSON's, so nothing but the comma and whitespace).
  void EndElement() {
    const size_t end = stream_.Tell();
    size_t start = next_;
    while (start < end && (text_[start] == ',' || text_[start] == ' ' || text_[start] == '\t' ||
                           text_[start] == '\r' || text_[start] == '\n')) {
      ++start;
    }
    if (elements_.size() < kElementsKept) elements_.push_back(text_.substr(start, end - start));
    next_ = end;
  }

  const std::string_view text_;
  const rapidjson::MemoryStream& stream_;
  const bool stop_at_third_;
  int depth_ = 0;
  bool root_is_array_ = false;
  bool too_deep_ = false;
  size_t next_ = 0;  // where the root array's next element may start
  Elements elements_;
  std::optional<size_t> stopped_at_;
};

// One walk over a (trimmed) line: is it JSON, and what are its top-level array's elements.
struct LineScan {
  rapidjson::ParseResult result;  // rapidjson's verdict on the line's first JSON value
  bool one_array = false;         // that value is an array and nothing follows it
  size_t value_end = 0;           // where that value ends if it is an array, else 0
  Elements elements;
  std::optional<size_t> values_at;  // stop_at_third: where the walk stopped
  bool too_deep = false;            // the walk stopped at kMaxLineDepth
};

// Why a line whose walk failed is no command; `at` is the byte in the line's own terms.
std::string ScanProblem(const LineScan& scan, size_t at) {
  if (scan.too_deep) {
    return absl::StrCat("JSON nested deeper than ", kMaxLineDepth, " levels at byte ", at);
  }
  return InvalidJson(at, scan.result.Code());
}

std::string TextAfterCommand(size_t at) {
  return absl::StrCat("text after the command at byte ", at,
                      ": a line holds one JSON array and nothing else");
}

// Why a line that is JSON is no command: text after its array, or no array of a name.
std::string NotACommandReason(const LineScan& scan, std::string_view line) {
  if (scan.value_end > 0 && scan.value_end < line.size()) return TextAfterCommand(scan.value_end);
  return std::string(kNotACommandReason);
}

// Walks `json`, whose bytes are `line`'s but for numbers quoted at the same places (or `line`
// itself); the elements are slices of `line`.
LineScan ScanText(std::string_view line, std::string_view json, bool stop_at_third) {
  rapidjson::MemoryStream stream(json.data(), json.size());
  ElementFinder finder(line, stream, stop_at_third);
  rapidjson::Reader reader;
  LineScan scan;
  // What follows the first value is not read as JSON: text after a command makes the line no
  // command, whatever the text.
  scan.result = reader.Parse<rapidjson::kParseStopWhenDoneFlag>(stream, finder);
  scan.values_at = finder.stopped_at();
  scan.too_deep = finder.too_deep();
  if (!scan.result.IsError()) {
    if (finder.root_is_array()) scan.value_end = stream.Tell();
    scan.one_array = finder.root_is_array() && scan.value_end == line.size();
  }
  scan.elements = std::move(finder.elements());
  return scan;
}

LineScan ScanLine(std::string_view line, bool stop_at_third) {
  LineScan scan = ScanText(line, line, stop_at_third);
  // A number too large for a double is still JSON (CouchDB stores such integers): the line is
  // walked again with those numbers quoted, which leaves every offset where it was.
  if (scan.result.Code() == rapidjson::kParseErrorNumberTooBig) [[unlikely]] {
    const QuotedNumbers quoted = QuoteLargeNumbers(line);
    scan = ScanText(line, quoted.text, stop_at_third);
  }
  return scan;
}

Command ParseReset(std::string_view line) {
  absl::StatusOr<Elements> elements = SplitJsonArray(line, kElementsKept);
  std::string_view config;
  if (elements.ok() && elements->size() > 1) config = (*elements)[1];
  return command::Reset{QueryConfig::FromJson(config)};
}

// When the values were left unread, `elements` holds the name and the function names only, and
// the values start `values_at` bytes into the line.
Command ParseReduce(const Elements& elements, bool rereduce, std::string_view line,
                    std::optional<size_t> values_at) {
  const CommandKind kind = rereduce ? CommandKind::kRereduce : CommandKind::kReduce;
  // Arguments after the values (a context string on CouchDB main) are ignored.
  if (elements.size() < (values_at.has_value() ? 2 : 3)) {
    return MissingArguments(kind, CommandName(kind));
  }
  // An empty list is a reduce to nothing: couchjs's runReduce loops over the functions it is
  // given and answers [true,[]] (QueryProtocol answers it so, with no task).
  auto functions = DecodeStrings(elements[1], kMaxReduceFunctions);
  if (std::get_if<StringsProblem>(&functions) != nullptr) {
    if (std::get<StringsProblem>(functions) == StringsProblem::kTooMany) {
      return command::BadArguments{
          kind, "too_many_functions",
          absl::StrCat("cnp-server: ", AbslView(CommandName(kind)), " names more than ",
                       kMaxReduceFunctions, " functions, the most one line may (CouchDB sends "
                       "one per view of a design document); split the design document's "
                       "views into several design documents")};
    }
    return command::BadArguments{
        kind, "query_protocol_error",
        absl::StrCat(AbslView(CommandName(kind)), " expects a list of function names")};
  }
  command::Reduce reduce;
  reduce.rereduce = rereduce;
  reduce.functions = std::get<std::vector<std::string>>(std::move(functions));
  for (const std::string& function : reduce.functions) reduce.names_bytes += function.size();
  if (values_at.has_value()) {
    reduce.kvs = line.substr(*values_at);
    reduce.values_unchecked = true;
    reduce.values_offset = *values_at;
  } else {
    reduce.kvs = elements[2];
  }
  reduce.line_bytes = line.size();
  return reduce;
}

// A reduce line read up to its values (ReduceValues::kLeftToTheWorker); nullopt when its
// values cannot be left unread (the line is then read whole, as any line).
std::optional<Command> ParseReduceHead(std::string_view line, bool rereduce) {
  LineScan scan = ScanLine(line, /*stop_at_third=*/true);
  if (!scan.values_at.has_value()) return std::nullopt;
  Command reduce = ParseReduce(scan.elements, rereduce, line, scan.values_at);
  // A broken function list is an error line only on a line that is JSON, which takes the whole
  // walk to know. A reduce of no functions is read whole too: no worker reads its values,
  // so they are checked here.
  const auto* parsed = std::get_if<command::Reduce>(&reduce);
  if (parsed == nullptr || parsed->functions.empty()) return std::nullopt;
  return reduce;
}

Command ParseDesignDoc(const Elements& elements) {
  std::optional<std::string> id;
  if (elements.size() > 1) id = DecodeUtf8String(elements[1]);
  if (!id.has_value()) return MissingArguments(CommandKind::kDesignDocCall, "ddoc");
  if (*id == "new") {
    std::optional<std::string> new_id;
    if (elements.size() > 3) new_id = DecodeUtf8String(elements[2]);
    if (!new_id.has_value()) return MissingArguments(CommandKind::kDesignDocNew, "ddoc new");
    return command::DesignDocNew{*std::move(new_id), elements[3]};
  }
  command::DesignDocCall call;
  call.id = *std::move(id);
  if (elements.size() > 2) {
    auto path = DecodeStrings(elements[2], kMaxDesignFunctionPath);
    if (auto* names = std::get_if<std::vector<std::string>>(&path)) {
      call.path = std::move(*names);
    } else if (std::get<StringsProblem>(path) == StringsProblem::kTooMany) {
      // couchjs walks such a path into the document and finds no function there (or fails on
      // the way); CouchDB never sends one. Answered without reading the rest of it.
      return command::BadArguments{
          CommandKind::kDesignDocCall, "not_found",
          absl::StrCat("missing function on design doc ", call.id,
                       ": a design function's path has at most ", kMaxDesignFunctionPath,
                       " names, as [\"views\",\"v\",\"map\"]")};
    }
  }
  if (!call.path.empty()) call.section = SectionOf(call.path.front());
  call.args = elements.size() > 3 ? elements[3] : std::string_view("[]");
  return call;
}

}  // namespace

command::BadArguments MissingArguments(CommandKind kind, std::string_view what) {
  return {kind, "query_protocol_error", absl::StrCat("'", AbslView(what), "' is missing arguments")};
}

std::string_view CommandName(CommandKind kind) {
  switch (kind) {
    case CommandKind::kReset:
      return "reset";
    case CommandKind::kAddLib:
      return "add_lib";
    case CommandKind::kAddFun:
      return "add_fun";
    case CommandKind::kMapDoc:
      return "map_doc";
    case CommandKind::kReduce:
      return "reduce";
    case CommandKind::kRereduce:
      return "rereduce";
    case CommandKind::kDesignDocNew:
    case CommandKind::kDesignDocCall:
      return "ddoc";
    case CommandKind::kListRow:
      return "list_row";
    case CommandKind::kListEnd:
      return "list_end";
    case CommandKind::kUnknown:
    case CommandKind::kNotACommand:
      break;
  }
  return {};
}

CommandKind PeekCommand(std::string_view line) {
  SkipSpace(line);
  if (line.empty() || line.front() != '[') return CommandKind::kNotACommand;
  line.remove_prefix(1);
  std::optional<std::string> name = TakeString(line);
  if (!name.has_value() || !AtElementEnd(line)) return CommandKind::kNotACommand;
  const CommandKind kind = KindOfName(*name);
  if (kind != CommandKind::kDesignDocCall) return kind;
  SkipSpace(line);
  if (line.front() == ',') {
    line.remove_prefix(1);
    std::optional<std::string> first = TakeString(line);
    if (first == "new" && AtElementEnd(line)) return CommandKind::kDesignDocNew;
  }
  return CommandKind::kDesignDocCall;
}

Command ParseCommand(std::string_view line, ReduceValues values) {
  line = TrimJsonText(line);
  // The hot path: the document goes to the worker as the very bytes CouchDB wrote.
  if (line.starts_with(kMapDocPrefix) && line.ends_with(']')) {
    return command::MapDoc{
        TrimJsonText(line.substr(kMapDocPrefix.size(), line.size() - kMapDocPrefix.size() - 1))};
  }
  const CommandKind peeked = PeekCommand(line);
  if (peeked == CommandKind::kReset) {
    // couchjs parses every line whole first: a reset that is not JSON ends the process as any
    // such line does. (Short, so checking it costs nothing.)
    if (LineScan scan = ScanLine(line, /*stop_at_third=*/false); scan.result.IsError()) {
      return command::NotACommand{ScanProblem(scan, scan.result.Offset()), line};
    } else if (!scan.one_array) {
      return command::NotACommand{NotACommandReason(scan, line), line};
    }
    return ParseReset(line);
  }
  if (values == ReduceValues::kLeftToTheWorker &&
      (peeked == CommandKind::kReduce || peeked == CommandKind::kRereduce)) {
    if (std::optional<Command> reduce = ParseReduceHead(line, peeked == CommandKind::kRereduce)) {
      return *std::move(reduce);
    }
  }

  LineScan scan = ScanLine(line, /*stop_at_third=*/false);
  if (scan.result.IsError()) {
    return command::NotACommand{ScanProblem(scan, scan.result.Offset()), line};
  }
  std::optional<std::string> name;
  if (scan.one_array && !scan.elements.empty()) name = DecodeString(scan.elements.front());
  if (!name.has_value()) return command::NotACommand{NotACommandReason(scan, line), line};
  const Elements& args = scan.elements;
  switch (KindOfName(*name)) {
    case CommandKind::kMapDoc:
      if (args.size() < 2) return MissingArguments(CommandKind::kMapDoc, *name);
      return command::MapDoc{args[1]};
    case CommandKind::kAddLib:
      return command::AddLib{args.size() > 1 ? args[1] : std::string_view("{}")};
    case CommandKind::kAddFun: {
      std::optional<std::string> function;
      if (args.size() > 1) function = DecodeUtf8String(args[1]);
      if (!function.has_value()) {
        return command::BadArguments{CommandKind::kAddFun, "compilation_error",
                                     "add_fun expects a function name string (of UTF-8)"};
      }
      return command::AddFun{*std::move(function)};
    }
    case CommandKind::kReduce:
      return ParseReduce(args, /*rereduce=*/false, line, std::nullopt);
    case CommandKind::kRereduce:
      return ParseReduce(args, /*rereduce=*/true, line, std::nullopt);
    case CommandKind::kDesignDocCall:
      return ParseDesignDoc(args);
    case CommandKind::kListRow:
      if (args.size() < 2) return MissingArguments(CommandKind::kListRow, *name);
      return command::ListRow{args[1]};
    case CommandKind::kListEnd:
      return command::ListEnd{};
    case CommandKind::kReset:  // taken above
    case CommandKind::kDesignDocNew:
    case CommandKind::kUnknown:
    case CommandKind::kNotACommand:
      break;
  }
  return command::Unknown{*std::move(name)};
}

std::optional<std::string> LineRestProblem(std::string_view rest, size_t offset,
                                           bool after_comma) {
  // The reader is put where it was on the line by a head of the same shape (inside the
  // top-level array, after a comma or after an element), so that every verdict, the error's
  // kind and byte included, is the one the whole line gets.
  const std::string_view head = after_comma ? "[0," : "[0";
  std::string text;
  text.reserve(head.size() + rest.size());
  text.append(head);
  text.append(rest);
  LineScan scan = ScanLine(text, /*stop_at_third=*/false);
  if (scan.result.IsError()) {
    const size_t at = std::max(scan.result.Offset(), head.size()) - head.size() + offset;
    return ScanProblem(scan, at);
  }
  if (!scan.one_array) {
    if (scan.value_end > head.size()) {
      return TextAfterCommand(scan.value_end - head.size() + offset);
    }
    return std::string(kNotACommandReason);
  }
  return std::nullopt;
}

std::optional<std::string_view> DocumentBeforeExtraArguments(std::string_view doc_and_rest) {
  std::string text;
  text.reserve(doc_and_rest.size() + 2);
  text.append("[");
  text.append(doc_and_rest);
  text.append("]");
  LineScan scan = ScanLine(text, /*stop_at_third=*/false);
  if (scan.result.IsError() || !scan.one_array || scan.elements.size() < 2) return std::nullopt;
  // The elements are slices of `text`, one byte ahead of `doc_and_rest`.
  const std::string_view first = scan.elements.front();
  return doc_and_rest.substr(static_cast<size_t>(first.data() - text.data()) - 1, first.size());
}

CommandKind KindOf(const Command& command) {
  struct Kinds {
    CommandKind operator()(const command::MapDoc&) const { return CommandKind::kMapDoc; }
    CommandKind operator()(const command::Reset&) const { return CommandKind::kReset; }
    CommandKind operator()(const command::AddLib&) const { return CommandKind::kAddLib; }
    CommandKind operator()(const command::AddFun&) const { return CommandKind::kAddFun; }
    CommandKind operator()(const command::Reduce& c) const {
      return c.rereduce ? CommandKind::kRereduce : CommandKind::kReduce;
    }
    CommandKind operator()(const command::DesignDocNew&) const {
      return CommandKind::kDesignDocNew;
    }
    CommandKind operator()(const command::DesignDocCall&) const {
      return CommandKind::kDesignDocCall;
    }
    CommandKind operator()(const command::ListRow&) const { return CommandKind::kListRow; }
    CommandKind operator()(const command::ListEnd&) const { return CommandKind::kListEnd; }
    CommandKind operator()(const command::Unknown&) const { return CommandKind::kUnknown; }
    CommandKind operator()(const command::BadArguments& c) const { return c.kind; }
    CommandKind operator()(const command::NotACommand&) const {
      return CommandKind::kNotACommand;
    }
  };
  return std::visit(Kinds{}, command);
}

}  // namespace cnp::couchdb
