#include "service/couchdb/command.h"

#include <optional>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"
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

std::optional<std::string> DecodeString(std::string_view json) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsString()) return std::nullopt;
  return std::string(doc.GetString(), doc.GetStringLength());
}

std::optional<std::vector<std::string>> DecodeStrings(std::string_view json) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsArray()) return std::nullopt;
  std::vector<std::string> strings;
  for (const rapidjson::Value& value : doc.GetArray()) {
    if (!value.IsString()) return std::nullopt;
    strings.emplace_back(value.GetString(), value.GetStringLength());
  }
  return strings;
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

std::optional<std::string> CheckJson(std::string_view line) {
  rapidjson::MemoryStream stream(line.data(), line.size());
  rapidjson::BaseReaderHandler<> ignore;
  rapidjson::Reader reader;
  rapidjson::ParseResult result = reader.Parse<rapidjson::kParseStopWhenDoneFlag>(stream, ignore);
  if (result.IsError()) {
    return absl::StrCat("invalid JSON at byte ", result.Offset(), ": ",
                        rapidjson::GetParseError_En(result.Code()));
  }
  return std::nullopt;
}

command::BadArguments MissingArguments(CommandKind kind, std::string_view what) {
  return {kind, "query_protocol_error",
          absl::StrCat("'", absl::string_view(what.data(), what.size()), "' is missing arguments")};
}

using Elements = std::vector<std::string_view>;

Command ParseReset(std::string_view line) {
  absl::StatusOr<Elements> elements = SplitJsonArray(line);
  std::string_view config;
  if (elements.ok() && elements->size() > 1) config = (*elements)[1];
  return command::Reset{QueryConfig::FromJson(config)};
}

Command ParseReduce(const Elements& elements, bool rereduce, size_t line_bytes) {
  const CommandKind kind = rereduce ? CommandKind::kRereduce : CommandKind::kReduce;
  // Arguments after the values (a context string on CouchDB main) are ignored.
  if (elements.size() < 3) return MissingArguments(kind, CommandName(kind));
  std::optional<std::vector<std::string>> functions = DecodeStrings(elements[1]);
  if (!functions.has_value() || functions->empty()) {
    return command::BadArguments{
        kind, "query_protocol_error",
        absl::StrCat(absl::string_view(CommandName(kind).data(), CommandName(kind).size()),
                     " expects a list of function names")};
  }
  command::Reduce reduce;
  reduce.rereduce = rereduce;
  for (const std::string& function : *functions) reduce.names_bytes += function.size();
  reduce.functions = *std::move(functions);
  reduce.kvs = elements[2];
  reduce.line_bytes = line_bytes;
  return reduce;
}

Command ParseDesignDoc(const Elements& elements) {
  std::optional<std::string> id;
  if (elements.size() > 1) id = DecodeString(elements[1]);
  if (!id.has_value()) return MissingArguments(CommandKind::kDesignDocCall, "ddoc");
  if (*id == "new") {
    std::optional<std::string> new_id;
    if (elements.size() > 3) new_id = DecodeString(elements[2]);
    if (!new_id.has_value()) return MissingArguments(CommandKind::kDesignDocNew, "ddoc new");
    return command::DesignDocNew{*std::move(new_id), elements[3]};
  }
  command::DesignDocCall call;
  call.id = *std::move(id);
  if (elements.size() > 2) {
    call.path = DecodeStrings(elements[2]).value_or(std::vector<std::string>());
  }
  if (!call.path.empty()) call.section = SectionOf(call.path.front());
  call.args = elements.size() > 3 ? elements[3] : std::string_view("[]");
  return call;
}

}  // namespace

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

Command ParseCommand(std::string_view line) {
  line = TrimJsonText(line);
  // The hot path: the document goes to the worker as the very bytes CouchDB wrote.
  if (line.starts_with(kMapDocPrefix) && line.ends_with(']')) {
    return command::MapDoc{
        TrimJsonText(line.substr(kMapDocPrefix.size(), line.size() - kMapDocPrefix.size() - 1))};
  }
  if (PeekCommand(line) == CommandKind::kReset) return ParseReset(line);

  if (std::optional<std::string> error = CheckJson(line)) {
    return command::NotACommand{*std::move(error), line};
  }
  absl::StatusOr<Elements> elements = SplitJsonArray(line);
  std::optional<std::string> name;
  if (elements.ok() && !elements->empty()) name = DecodeString(elements->front());
  if (!name.has_value()) {
    return command::NotACommand{"expected a command: a JSON array starting with a string", line};
  }
  const Elements& args = *elements;
  switch (KindOfName(*name)) {
    case CommandKind::kMapDoc:
      if (args.size() < 2) return MissingArguments(CommandKind::kMapDoc, *name);
      return command::MapDoc{args[1]};
    case CommandKind::kAddLib:
      return command::AddLib{args.size() > 1 ? args[1] : std::string_view("{}")};
    case CommandKind::kAddFun: {
      std::optional<std::string> function;
      if (args.size() > 1) function = DecodeString(args[1]);
      if (!function.has_value()) {
        return command::BadArguments{CommandKind::kAddFun, "compilation_error",
                                     "add_fun expects a function name string"};
      }
      return command::AddFun{*std::move(function)};
    }
    case CommandKind::kReduce:
      return ParseReduce(args, /*rereduce=*/false, line.size());
    case CommandKind::kRereduce:
      return ParseReduce(args, /*rereduce=*/true, line.size());
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
