#include "service/upload/design_yaml.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/call_limit.h"
#include "common/closest_name.h"
#include "common/couchdb/builtin_reduces.h"
#include "common/couchdb/couchdb_languages.h"
#include "common/couchdb/database_name.h"
#include "common/couchdb/json.h"
#include "common/couchdb/target_databases.h"
#include "common/printable_text.h"
#include "common/yaml_strict_syntax.h"
#include "common/yaml_syntax_note.h"
#include "common/utf8_text.h"
#include "service/upload/yaml11_reading.h"
#include "yaml-cpp/depthguard.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace cnp::upload {
namespace {

// Whether cnp-upload named the member of the plain key `text` otherwise: json.dumps wrote the
// boolean or integer YAML 1.1 read (`on` -> "true", `010` -> "8"). A float key is left out:
// Python's repr of it ("1.0") is mostly the text again, and rounding aside nothing tells.
bool Yaml11KeyDiffers(absl::string_view text, const Yaml11Reading& old) {
  int64_t integer = 0;
  const bool named = old.said == "true" || old.said == "false" ||
                     absl::SimpleAtoi(old.said, &integer);
  return named && old.said != text;
}

using Allocator = rapidjson::Document::AllocatorType;

constexpr absl::string_view kDdocKeys[] = {
    "databases", "classification", "language", "views",   "validate_doc_update",
    "filters",   "shows",          "lists",    "updates", "rewrites",
    "options",   "autoupdate"};
constexpr absl::string_view kFunctionSections[] = {"filters", "shows", "lists", "updates"};
constexpr absl::string_view kViewKeys[] = {"map", "reduce", "options"};
// The known key a key that is not one was most likely meant to be, if any.
template <size_t N>
std::optional<std::string> MeantKey(absl::string_view key, const absl::string_view (&keys)[N]) {
  const std::vector<std::string> names(std::begin(keys), std::end(keys));
  return ClosestName(key, names);
}

template <size_t N>
bool OneOf(absl::string_view key, const absl::string_view (&keys)[N]) {
  for (absl::string_view k : keys) {
    if (k == key) return true;
  }
  return false;
}

absl::string_view KindName(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Scalar:
      return node.Scalar().empty() ? "an empty string" : "a single value";
    case YAML::NodeType::Null: return "empty";
    default: return "undefined";
  }
}

rapidjson::Value String(absl::string_view s, Allocator& alloc) {
  return rapidjson::Value(s.data(), static_cast<rapidjson::SizeType>(s.size()), alloc);
}

// YAML 1.2's core schema for an unquoted scalar: null, booleans, integers (decimal, 0x hex,
// 0o octal) and floats are JSON's own types; anything else, and anything quoted or tagged !!str, is a string. An integer past
// 64 bits is kept as written (CouchDB keeps it digit for digit, where a double would round
// it); a number past a double's range has no JSON value to be and sets `error`.
rapidjson::Value PlainScalarToJson(const YAML::Node& node, Allocator& alloc, std::string& error) {
  const std::string& s = node.Scalar();
  if (node.Tag() == "!" || node.Tag() == "tag:yaml.org,2002:str") return String(s, alloc);
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") {
    return rapidjson::Value(rapidjson::kNullType);
  }
  if (s == "true" || s == "True" || s == "TRUE") return rapidjson::Value(true);
  if (s == "false" || s == "False" || s == "FALSE") return rapidjson::Value(false);
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
    // The core schema's hexadecimal and octal integers: 0x1F is 31, 0o17 is 15.
    const bool hex = s[1] == 'x';
    const absl::string_view digits = absl::string_view(s).substr(2);
    if (digits.find_first_not_of(hex ? "0123456789abcdefABCDEF" : "01234567") ==
        absl::string_view::npos) {
      errno = 0;
      const uint64_t u = std::strtoull(std::string(digits).c_str(), nullptr, hex ? 16 : 8);
      if (errno == ERANGE) {
        error = absl::StrCat(s, " is an integer past 64 bits; write it in decimal, which is "
                             "kept digit for digit, or quote it to have it as a string");
        return rapidjson::Value(rapidjson::kNullType);
      }
      if (u <= static_cast<uint64_t>(INT64_MAX)) return rapidjson::Value(static_cast<int64_t>(u));
      return rapidjson::Value(u);
    }
    return String(s, alloc);
  }
  if (s.find_first_of("xX") == std::string::npos) {
    if (int64_t i; absl::SimpleAtoi(s, &i)) return rapidjson::Value(i);
    if (uint64_t u; absl::SimpleAtoi(s, &u)) return rapidjson::Value(u);
  }
  double d;
  bool looks_numeric = s.find_first_not_of("0123456789+-.eE") == std::string::npos;
  if (!looks_numeric || !absl::SimpleAtod(s, &d)) return String(s, alloc);
  const absl::string_view unsigned_text = absl::StripPrefix(s, "+");
  if (unsigned_text.find_first_of(".eE") == absl::string_view::npos) {
    // YAML's 000123 is 123; JSON allows no leading zero, so they go before the digits are kept.
    absl::string_view digits = unsigned_text;
    const bool negative = absl::ConsumePrefix(&digits, "-");
    while (digits.size() > 1 && digits[0] == '0') digits.remove_prefix(1);
    const std::string integer = absl::StrCat(negative ? "-" : "", digits);
    if (std::optional<rapidjson::Value> kept = couchdb::KeptNumberValue(integer, alloc)) {
      return std::move(*kept);
    }
  }
  if (!std::isfinite(d)) {
    error = absl::StrCat(s, " is a number beyond what JSON's numbers hold in CouchDB (a double, "
                         "at most about 1.8e308); quote it to have it as a string");
    return rapidjson::Value(rapidjson::kNullType);
  }
  return rapidjson::Value(d);
}

std::string NotOurLanguage(absl::string_view language) {
  return absl::StrCat("language \"", language, "\" is ", couchdb::CouchDbOwnLanguageReason(language),
                      "; a cnp design document names cnp's query server, \"python\" (CouchDB's "
                      "COUCHDB_QUERY_SERVER_PYTHON) or the name the operator gave it");
}

// Counts a file's nodes, and the bytes of JSON they will make, from the parser's events, before
// any tree is built, and stops the parser once either passes its limit: yaml-cpp's tree costs
// about 500 bytes a node, and a 4 MB file of 2 million list items took 1 GB to build before the
// walk's budget (Parser::Spend) saw its nodes. Counted as the walk counts them: each use of an
// alias as many nodes and bytes as its anchor's node holds, so an alias bomb is refused here
// too, before its tree is walked. The bytes matter for few nodes of long text: a 3 MB string
// used 20 times is 23 nodes, but the walk copied it 20 times over and the JSON text held it
// again before the budget could refuse it.
class NodeCounter final : public YAML::EventHandler {
 public:
  // What the count measures: nodes visited, and the bytes of JSON they make (as Parser::Spend).
  struct Count {
    int64_t nodes = 0;
    int64_t json_bytes = 0;
  };
  // Thrown out of the parser at the node that made the count pass a limit.
  struct TooMany {
    YAML::Mark mark;
    bool json_bytes;  // the bytes passed their limit (else the nodes did)
  };

  explicit NodeCounter(Count limit) : limit_(limit) {}

  void OnDocumentStart(const YAML::Mark&) override { anchor_sizes_.clear(); }  // per document
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    Leaf(mark, anchor, {1, kCollectionJsonBytes});
  }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                const std::string& value) override {
    Leaf(mark, anchor, {1, ScalarJsonBytes(value.size())});
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    // An alias inside its own anchor's node (&x [*x]) is a cycle, with no size to count: it is
    // counted once here, and the walk ends it at the depth limit.
    auto size = anchor_sizes_.find(anchor);
    Add(mark, size == anchor_sizes_.end() ? Count{1, kCollectionJsonBytes} : size->second);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    Open(mark, anchor);
  }
  void OnSequenceEnd() override { Close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    Open(mark, anchor);
  }
  void OnMapEnd() override { Close(); }

  // The JSON bytes Parser::Spend charges for a node: a scalar's text and its quotes and
  // separator, or a collection's (or a null's) brackets.
  static constexpr int64_t kCollectionJsonBytes = 2;
  static int64_t ScalarJsonBytes(size_t text_bytes) {
    return static_cast<int64_t>(text_bytes) + 3;
  }

 private:
  struct OpenCollection {
    YAML::anchor_t anchor;
    Count before;  // the count before the collection's own node
  };

  void Leaf(const YAML::Mark& mark, YAML::anchor_t anchor, Count size) {
    Add(mark, size);
    if (anchor != YAML::NullAnchor) anchor_sizes_[anchor] = size;
  }
  void Open(const YAML::Mark& mark, YAML::anchor_t anchor) {
    open_.push_back({anchor, count_});
    Add(mark, {1, kCollectionJsonBytes});
  }
  void Close() {
    const OpenCollection closed = open_.back();
    open_.pop_back();
    if (closed.anchor != YAML::NullAnchor) {
      anchor_sizes_[closed.anchor] = {count_.nodes - closed.before.nodes,
                                      count_.json_bytes - closed.before.json_bytes};
    }
  }
  // No overflow: an anchor's size is at most the count so far, which is at most the limit.
  void Add(const YAML::Mark& mark, Count size) {
    count_.nodes += size.nodes;
    count_.json_bytes += size.json_bytes;
    if (count_.nodes > limit_.nodes) throw TooMany{mark, false};
    if (count_.json_bytes > limit_.json_bytes) throw TooMany{mark, true};
  }

  const Count limit_;
  Count count_;
  std::vector<OpenCollection> open_;
  std::map<YAML::anchor_t, Count> anchor_sizes_;
};

// Parses all of `text` for its events alone; throws NodeCounter::TooMany past `limit` (and
// YAML::Exception for YAML that is not valid, as YAML::LoadAll would).
void CountNodes(const std::string& text, NodeCounter::Count limit) {
  std::istringstream stream(text);
  YAML::Parser parser(stream);
  NodeCounter counter(limit);
  while (parser.HandleNextDocument(counter)) {
  }
}

class Parser {
 public:
  Parser(const v1::UploadFile& file, absl::string_view default_language,
         const YamlLimits& limits, YamlBudget& budget, ProblemList& problems,
         Classifications* classifications)
      : file_(file),
        default_language_(default_language),
        limits_(limits),
        budget_(budget),
        problems_(problems),
        classifications_(classifications) {}

  std::vector<DesignDocSpec> Parse() {
    if (static_cast<int64_t>(file_.text().size()) > limits_.max_file_bytes) {
      problems_.Error(At(YAML::Mark()),
                      absl::StrCat("the file is ", file_.text().size(), " bytes, more than the ",
                                   limits_.max_file_bytes,
                                   " bytes cnp-server accepts for one YAML file (the operator "
                                   "can raise cnp-server's --max-yaml-bytes)"));
      return {};
    }
    // The files after the one that spent a request's budget are not parsed: each would only
    // be refused at its first node, after yaml-cpp had read all of it.
    if (budget_.nodes > limits_.max_nodes || budget_.json_bytes > limits_.max_json_bytes) {
      problems_.Error(At(YAML::Mark()),
                      "not read: the files before it in this request already hold all the YAML "
                      "cnp-server reads for one request (see the error there)");
      return {};
    }
    YAML::Node root;
    try {
      try {
        CountNodes(file_.text(), {limits_.max_nodes - budget_.nodes,
                                  limits_.max_json_bytes - budget_.json_bytes});
      } catch (const NodeCounter::TooMany& too_many) {
        // Spent: the walk would have spent it all.
        if (too_many.json_bytes) {
          JsonBytesExhausted(too_many.mark);
          budget_.json_bytes = limits_.max_json_bytes + 1;
        } else {
          NodesExhausted(too_many.mark);
          budget_.nodes = limits_.max_nodes + 1;
        }
        return {};
      }
      // An unclosed quote took the design documents after it into its text, silently. (After
      // the count, which bounds the events this reads.)
      CheckStrictYamlSyntax(file_.text());
      // Every document of the stream, not the first only: one after a `---` was dropped
      // without a word (cnp-upload's PyYAML refused such a file). Empty ones (a lone `---`)
      // hold nothing to drop.
      std::vector<YAML::Node> documents;
      for (YAML::Node& document : YAML::LoadAll(file_.text())) {
        if (!document.IsNull()) documents.push_back(std::move(document));
      }
      if (documents.size() > 1) {
        problems_.Error(At(documents[1].Mark()),
                        absl::StrCat("this file holds ", documents.size(),
                                     " YAML documents (each `---` starts one); cnp reads one "
                                     "mapping of design documents per file: put them all in "
                                     "one mapping, or each document in a file of its own"));
        return {};
      }
      if (!documents.empty()) root = documents.front();
    } catch (const YAML::DeepRecursion& e) {
      // yaml-cpp's own word for this is "bad file".
      problems_.Error(At(e.mark), absl::StrCat("lists and mappings are nested too deeply for "
                                               "the YAML reader (cnp takes ",
                                               limits_.max_depth, " levels)"));
      return {};
    } catch (const YAML::Exception& e) {
      // yaml-cpp counts no byte-order mark in its positions.
      const size_t bom = absl::StartsWith(file_.text(), "\xEF\xBB\xBF") ? 3 : 0;
      const bool at_end = !e.mark.is_null() && e.mark.pos >= 0 &&
                          static_cast<size_t>(e.mark.pos) + bom >= file_.text().size();
      problems_.Error(at_end ? AtEnd() : At(e.mark),
                      absl::StrCat("not valid YAML: ", e.msg,
                                   at_end ? " by the end of the file" : "",
                                   YamlSyntaxNote(file_.text(), e.mark.line, e.msg)));
      return {};
    }
    std::vector<DesignDocSpec> specs;
    try {
      CheckTags(root);
      if (root.IsNull()) {
        problems_.Warning(At(YAML::Mark()), "no design documents in this file");
        return specs;
      }
      if (!root.IsMap()) {
        problems_.Error(At(root.Mark()),
                        absl::StrCat("expected a mapping from design document names to their "
                                     "contents, found ",
                                     KindName(root)));
        return specs;
      }
      std::set<std::string> seen;
      for (const auto& entry : root) {
        std::optional<std::string> name = Key(entry.first, seen);
        if (!name) continue;
        if (*name == "classifications") {
          ClassificationsEntry(entry.second);
          continue;
        }
        if (name->empty() || absl::StartsWith(*name, "_design/")) {
          problems_.Error(At(entry.first.Mark()),
                          "a design document's name is its id without \"_design/\", e.g. "
                          "\"location\" for _design/location");
          continue;
        }
        if (std::optional<DesignDocSpec> spec = DesignDoc(*name, entry.first, entry.second)) {
          specs.push_back(std::move(*spec));
        }
      }
    } catch (const YAML::Exception& e) {
      // The accessors used above do not throw for well-formed trees; this is a backstop.
      problems_.Error(At(e.mark), absl::StrCat("could not read the YAML: ", e.msg));
    }
    return specs;
  }

 private:
  // A plain scalar YAML 1.1 reads otherwise than cnp does (yaml11_reading.h), warned of once
  // at its line, however often aliases use it. CouchDB's options are flags (local_seq,
  // include_design...): "no" is a set flag to it, where cnp-upload had sent false.
  // `key` names the member whose value `node` is; a key itself is warned of with `is_key`.
  void WarnYaml11Reading(const YAML::Node& node, const rapidjson::Value& value,
                         absl::string_view key, bool is_key = false) {
    // Quoted or tagged: meant as written; but !!int asked YAML 1.1 for an integer too, and
    // its 010 was 8 there.
    const bool tagged_int = node.Tag() == "tag:yaml.org,2002:int";
    if (node.Tag() != "?" && !tagged_int) return;
    const std::string& text = node.Scalar();
    std::optional<Yaml11Reading> old = Yaml11ReadingIfDifferent(text, value);
    if (!old || (tagged_int && old->kind != Yaml11Reading::Kind::kJson)) return;
    if (is_key && (old->kind != Yaml11Reading::Kind::kJson || !Yaml11KeyDiffers(text, *old))) {
      return;
    }
    if (!yaml11_warned_.emplace(node.Mark().line, node.Mark().column).second) return;
    std::string now;
    if (value.IsString()) now = absl::StrCat("the string \"", Printable(text), "\"");
    else if (value.IsBool()) now = value.GetBool() ? "true" : "false";
    else if (value.IsNull()) now = "null";
    else now = absl::StrCat("the number ", couchdb::ToJson(value));
    std::string advice;
    switch (old->kind) {
      case Yaml11Reading::Kind::kString:
        advice = "quote it if the string is meant";
        break;
      case Yaml11Reading::Kind::kNotJson:
        advice = "JSON has no such number: quote it to keep the string and silence this";
        break;
      case Yaml11Reading::Kind::kJson:
        advice = absl::StrCat("write ", old->said, " if that is meant, or ",
                              value.IsString() ? "quote it if the string is"
                                               : absl::StrCat("write ", couchdb::ToJson(value),
                                                              " if that is"));
        break;
    }
    problems_.Warning(
        At(node.Mark()),
        absl::StrCat(is_key ? "the key "
                            : key.empty() ? "" : absl::StrCat("\"", Printable(key), "\": "),
                     Printable(text), " is ", now,
                     " (YAML 1.2, as cnp reads it); cnp-upload's YAML 1.1 read it as ", old->said,
                     ": ", advice));
  }

  // YAML tags are refused at their file:line, not ignored: a tag asks the reader to make
  // something other than the text of the value (PyYAML's !!python/object builds an object,
  // an !include reads another file), and cnp, which reads plain YAML 1.2 and runs no tag,
  // would upload the bare text in its place, a design document other than the one its author
  // meant, without a word. The core schema's tags are taken where they agree with the value as
  // cnp reads it (!!str is honoured; !!int 7, !!map {...}). Walked once before the file is
  // read, every use of an alias included, so the walk is bounded as the reading is (a file past
  // the bounds is refused by the reading, which says so).
  void CheckTags(const YAML::Node& root) {
    int64_t visited = 0;
    std::set<std::pair<int, int>> reported;  // an alias's node is seen once per use
    CheckTags(root, 0, visited, reported);
  }

  void CheckTags(const YAML::Node& node, int depth, int64_t& visited,
                 std::set<std::pair<int, int>>& reported) {
    if (++visited > limits_.max_nodes || depth >= limits_.max_depth) return;
    if (std::optional<std::string> why = TagProblem(node)) {
      if (reported.emplace(node.Mark().line, node.Mark().column).second) {
        problems_.Error(At(node.Mark()), *why);
        refused_tags_.emplace(node.Mark().line, node.Mark().column);
      }
    }
    if (node.IsMap()) {
      for (const auto& entry : node) {
        CheckTags(entry.first, depth + 1, visited, reported);
        CheckTags(entry.second, depth + 1, visited, reported);
      }
    } else if (node.IsSequence()) {
      for (const auto& item : node) CheckTags(item, depth + 1, visited, reported);
    }
  }

  static std::optional<std::string> TagProblem(const YAML::Node& node) {
    const std::string& tag = node.Tag();
    // Untagged ("?", or none for a null) or the non-specific "!" of a quoted scalar.
    if (tag.empty() || tag == "?" || tag == "!") return std::nullopt;
    constexpr absl::string_view kCore = "tag:yaml.org,2002:";
    const bool core = absl::StartsWith(tag, kCore);
    const std::string shown =
        Printable(core ? absl::StrCat("!!", absl::string_view(tag).substr(kCore.size())) : tag);
    if (core) {
      const absl::string_view type = absl::string_view(tag).substr(kCore.size());
      // Honoured on a scalar (PlainScalarToJson keeps it text); a list or a mapping is no text.
      if (type == "str" && node.IsScalar()) return std::nullopt;
      bool agrees = false;
      if (type == "map") agrees = node.IsMap();
      if (type == "seq") agrees = node.IsSequence();
      if (node.IsScalar() && (type == "int" || type == "float" || type == "bool" ||
                              type == "null")) {
        rapidjson::Document scratch;
        std::string error;
        const rapidjson::Value value =
            PlainScalarToJson(YAML::Node(node.Scalar()), scratch.GetAllocator(), error);
        // An integer past 64 bits is kept digit for digit (PlainScalarToJson), still an integer.
        if (type == "int") {
          agrees = value.IsInt64() || value.IsUint64() || couchdb::IsKeptNumber(value);
        }
        if (type == "float") agrees = value.IsNumber();
        if (type == "bool") agrees = value.IsBool();
        if (type == "null") agrees = value.IsNull();
      }
      if (agrees) return std::nullopt;
      if (type == "int" || type == "float" || type == "bool" || type == "null" ||
          type == "map" || type == "seq" || type == "str") {
        const std::string value = node.IsScalar()
                                      ? absl::StrCat("\"", Printable(node.Scalar()), "\"")
                                      : std::string(KindName(node));
        return absl::StrCat("the YAML tag ", shown, " does not fit its value, ", value,
                            ", which cnp (reading YAML 1.2's core schema) would upload as it "
                            "reads without the tag; write the value as one (true, false, 12, "
                            "1.5, null, a list, a mapping) and remove the tag");
      }
    }
    return absl::StrCat(
        "the YAML tag ", shown,
        " is not supported: cnp reads plain YAML 1.2 and runs no tag, so the value would be "
        "uploaded as the bare text or mapping after the tag, not what ", shown,
        " makes of it; write the value out (in this file) and remove the tag, or quote it if "
        "a string that starts with ! is meant");
  }

  v1::SourceLocation At(const YAML::Mark& mark) const {
    v1::SourceLocation at;
    at.set_file(file_.name());
    if (!mark.is_null()) {
      at.set_line(mark.line + 1);
      at.set_column(mark.column + 1);
    }
    return at;
  }

  // The end of the file as an editor shows it: after the last character of its last line that
  // holds one, not on the line after a final newline (where yaml-cpp puts a mark at the end),
  // nor on blank lines after it; a CR before a newline and a byte-order mark are no columns.
  v1::SourceLocation AtEnd() const {
    const std::string& text = file_.text();
    size_t end = text.size();
    while (end > 0 && absl::ascii_isspace(static_cast<unsigned char>(text[end - 1]))) --end;
    const size_t newline = end == 0 ? std::string::npos : text.rfind('\n', end - 1);
    size_t first = newline == std::string::npos ? 0 : newline + 1;
    if (first == 0 && absl::StartsWith(text, "\xEF\xBB\xBF")) first = std::min<size_t>(3, end);
    v1::SourceLocation at;
    at.set_file(file_.name());
    at.set_line(static_cast<int>(std::count(text.begin(), text.begin() + end, '\n')) + 1);
    at.set_column(static_cast<int>(end - first) + 1);
    return at;
  }

  // A mapping key as a string, or nothing (and an error) when it is not a scalar or repeats.
  std::optional<std::string> Key(const YAML::Node& key, std::set<std::string>& seen) {
    if (!Spend(key)) return std::nullopt;
    if (key.IsNull()) {
      // Written as a plain word (`null:`, `~:`), it reads as YAML's null, no name at all.
      problems_.Error(At(key.Mark()),
                      "this key reads as YAML's null (null, ~ or nothing), not a name: quote it "
                      "(\"null\":) if that is the name meant");
      return std::nullopt;
    }
    if (!key.IsScalar()) {
      problems_.Error(At(key.Mark()), "a key must be a plain name, not a list or a mapping");
      return std::nullopt;
    }
    if (key.Scalar() == "<<" && key.Tag() != "!") {
      // yaml-cpp takes a merge key for a plain one: the YAML would have a "<<" member where
      // its author meant the merged keys.
      problems_.Error(At(key.Mark()),
                      "YAML merge keys (<<) are not supported here; write the keys out");
      return std::nullopt;
    }
    if (!seen.insert(key.Scalar()).second) {
      problems_.Error(At(key.Mark()), absl::StrCat("\"", key.Scalar(), "\" is given twice"));
      return std::nullopt;
    }
    WarnYaml11Reading(key, rapidjson::Value(rapidjson::StringRef(key.Scalar().data(),
                                                                 key.Scalar().size())),
                      "", /*is_key=*/true);
    return key.Scalar();
  }

  // A key cnp does not know, in `where` (a design document or a view). cnp-upload kept such a
  // key with a warning, and YAML written for it must still upload: it is kept in `object` as
  // it is, with a warning. A key that looks like a misspelt known one is an error instead: kept
  // as a field, the section it was meant to be (`veiws`) would be missing without a word.
  template <size_t N>
  void UnknownKey(const YAML::Node& key, const std::string& field, const YAML::Node& value,
                  absl::string_view where, const absl::string_view (&keys)[N],
                  rapidjson::Value& object, Allocator& alloc) {
    const std::string known = absl::StrCat(" (known: ", absl::StrJoin(keys, ", "), ")");
    if (absl::StartsWith(field, "_")) {
      // CouchDB's own fields (_id, _rev, ...): cnp writes them, and CouchDB refuses others.
      problems_.Error(At(key.Mark()),
                      absl::StrCat("key \"", field, "\" in ", where,
                                   ": fields that start with '_' are CouchDB's", known));
      return;
    }
    if (const std::optional<std::string> meant = MeantKey(field, keys); meant.has_value()) {
      problems_.Error(At(key.Mark()), absl::StrCat("unknown key \"", field, "\" in ", where,
                                                   "; did you mean \"", *meant, "\"?", known));
      return;
    }
    problems_.Warning(At(key.Mark()),
                      absl::StrCat("unknown key \"", field, "\" in ", where,
                                   ": kept in the design document, as cnp-upload kept it (a "
                                   "value YAML 1.1 read otherwise is warned of at its line)",
                                   known));
    object.AddMember(String(field, alloc), Json(value, alloc, 0, field), alloc);
  }

  bool ExpectMap(const YAML::Node& node, absl::string_view what) {
    if (node.IsMap()) return true;
    problems_.Error(At(node.Mark()),
                    absl::StrCat(what, " must be a mapping, found ", KindName(node)));
    return false;
  }

  std::optional<DesignDocSpec> DesignDoc(const std::string& name, const YAML::Node& key,
                                         const YAML::Node& value) {
    DesignDocSpec spec;
    spec.name = name;
    spec.location = At(key.Mark());
    if (!ExpectMap(value, absl::StrCat("design document \"", name, "\""))) return std::nullopt;

    rapidjson::Document& body = spec.body;
    body.SetObject();
    Allocator& alloc = body.GetAllocator();
    body.AddMember("_id", String(spec.id(), alloc), alloc);

    bool has_language = false;
    std::set<std::string> seen;
    for (const auto& entry : value) {
      std::optional<std::string> field = Key(entry.first, seen);
      if (!field) continue;
      const YAML::Node& node = entry.second;
      if (!OneOf(*field, kDdocKeys)) {
        UnknownKey(entry.first, *field, node, absl::StrCat("design document \"", name, "\""),
                   kDdocKeys, body, alloc);
      } else if (*field == "databases") {
        Databases(node, spec);
      } else if (*field == "classification") {
        ClassificationNames(node, spec);
      } else if (*field == "language") {
        if (ScalarString(node, "language")) {
          if (couchdb::IsCouchDbOwnLanguage(node.Scalar())) {
            problems_.Error(At(node.Mark()), NotOurLanguage(node.Scalar()));
          } else if (!couchdb::CanNameAQueryServer(node.Scalar())) {
            problems_.Error(At(node.Mark()),
                            absl::StrCat("language \"", Printable(node.Scalar()),
                                         "\" names no query server: it is the one word CouchDB "
                                         "knows cnp's query server by, e.g. python"));
          }
          body.AddMember("language", String(node.Scalar(), alloc), alloc);
          has_language = true;
        }
      } else if (*field == "views") {
        Views(node, spec);
      } else if (*field == "validate_doc_update") {
        FunctionAt(node, {"validate_doc_update"}, spec);
      } else if (OneOf(*field, kFunctionSections)) {
        FunctionSection(*field, node, spec);
      } else if (*field == "rewrites") {
        if (node.IsSequence()) {
          body.AddMember("rewrites", Json(node, alloc), alloc);  // routing rules, kept as is
        } else {
          FunctionAt(node, {"rewrites"}, spec);
        }
      } else if (*field == "options") {
        if (ExpectMap(node, "options")) {
          body.AddMember("options", Json(node, alloc), alloc);
        }
      } else if (*field == "autoupdate") {
        rapidjson::Value flag = Json(node, alloc);
        if (!flag.IsBool()) {
          problems_.Error(At(node.Mark()), "autoupdate must be true or false");
        } else {
          body.AddMember("autoupdate", flag, alloc);
        }
      }
    }
    if (!has_language) body.AddMember("language", String(default_language_, alloc), alloc);
    return spec;
  }

  bool ScalarString(const YAML::Node& node, absl::string_view what) {
    if (node.IsScalar() && !node.Scalar().empty()) return true;
    problems_.Error(At(node.Mark()),
                    absl::StrCat(what, " must be a non-empty string, found ", KindName(node)));
    return false;
  }

  void Databases(const YAML::Node& node, DesignDocSpec& spec) {
    for (auto& [entry, at] : Names(node, "a database name or pattern", "databases")) {
      if (!CanReachADatabase(entry, at)) continue;
      spec.databases.push_back({std::move(entry), std::move(at)});
    }
  }

  // A name CouchDB would refuse to create, or a pattern only such names match, is an error
  // here, where its line is known: at upload it would only match nothing.
  bool CanReachADatabase(const std::string& entry, const v1::SourceLocation& at) {
    if (couchdb::CanMatchADatabase(entry)) return true;
    problems_.Error(at, absl::StrCat(couchdb::IsDatabasePattern(entry) ? "the pattern " : "",
                                     "\"", Printable(entry), "\" can never ",
                                     couchdb::IsDatabasePattern(entry) ? "match" : "name",
                                     " a CouchDB database: ", couchdb::kDatabaseNameRule));
    return false;
  }

  // A scalar or a list of scalars, each a non-empty string.
  std::vector<std::pair<std::string, v1::SourceLocation>> Names(const YAML::Node& node,
                                                                absl::string_view what,
                                                                absl::string_view list) {
    std::vector<std::pair<std::string, v1::SourceLocation>> names;
    auto add = [&](const YAML::Node& item) {
      if (!Spend(item)) return;
      if (ScalarString(item, what)) names.emplace_back(item.Scalar(), At(item.Mark()));
    };
    if (node.IsSequence()) {
      if (node.size() == 0) {
        problems_.Error(At(node.Mark()), absl::StrCat(list, " is an empty list"));
      }
      for (const auto& item : node) add(item);
    } else {
      add(node);
    }
    return names;
  }

  void ClassificationNames(const YAML::Node& node, DesignDocSpec& spec) {
    for (auto& [name, at] : Names(node, "a classification's name", "classification")) {
      spec.classifications.push_back({std::move(name), std::move(at)});
    }
  }

  // The top-level `classifications:` mapping: name -> pattern or list of patterns.
  void ClassificationsEntry(const YAML::Node& node) {
    if (!ExpectMap(node, "classifications")) return;
    std::set<std::string> seen;
    for (const auto& entry : node) {
      std::optional<std::string> name = Key(entry.first, seen);
      if (!name) continue;
      Classification classification;
      classification.location = At(entry.first.Mark());
      const std::string what = absl::StrCat("classification \"", *name, "\"");
      for (auto& [pattern, at] : Names(entry.second, "a database name or pattern", what)) {
        if (CanReachADatabase(pattern, at)) classification.patterns.push_back(std::move(pattern));
      }
      if (classifications_ == nullptr) continue;
      auto [it, inserted] = classifications_->emplace(*name, classification);
      if (!inserted && it->second.patterns != classification.patterns) {
        const v1::SourceLocation& other = it->second.location;
        problems_.Error(classification.location,
                        absl::StrCat("classification \"", *name, "\" is also defined, with other "
                                     "patterns, at ", other.file(), ":", other.line()));
      }
    }
  }

  void Views(const YAML::Node& node, DesignDocSpec& spec) {
    if (!ExpectMap(node, "views")) return;
    Allocator& alloc = spec.body.GetAllocator();
    rapidjson::Value views(rapidjson::kObjectType);
    // Functions are recorded by path and written in after all sections are built, so the
    // object can be filled here without tracking member pointers.
    std::set<std::string> seen;
    for (const auto& entry : node) {
      std::optional<std::string> view = Key(entry.first, seen);
      if (!view || Unreachable(entry.first, *view, "views")) continue;
      if (*view == "lib") {
        problems_.Error(At(entry.first.Mark()),
                        "views.lib holds CommonJS modules for JavaScript view servers; named "
                        "Python functions import their helpers instead");
        continue;
      }
      const YAML::Node& def = entry.second;
      rapidjson::Value body(rapidjson::kObjectType);
      if (def.IsScalar()) {
        // The shorthand: a map-only view.
        AddFunction(def, {"views", *view, "map"}, spec, body, "map", alloc);
      } else if (ExpectMap(def, absl::StrCat("view \"", *view, "\""))) {
        std::set<std::string> view_seen;
        bool has_map = false;
        for (const auto& item : def) {
          std::optional<std::string> key = Key(item.first, view_seen);
          if (!key) continue;
          if (!OneOf(*key, kViewKeys)) {
            UnknownKey(item.first, *key, item.second, absl::StrCat("view \"", *view, "\""),
                       kViewKeys, body, alloc);
          } else if (*key == "map") {
            has_map = true;
            AddFunction(item.second, {"views", *view, "map"}, spec, body, "map", alloc);
          } else if (*key == "reduce") {
            if (item.second.IsScalar() && absl::StartsWith(item.second.Scalar(), "_")) {
              const std::string& reduce = item.second.Scalar();
              if (couchdb::IsBuiltinReduce(reduce)) {
                body.AddMember("reduce", String(reduce, alloc), alloc);
              } else {
                problems_.Error(At(item.second.Mark()),
                                absl::StrCat("reduce \"", reduce, "\" in view \"", *view, "\" ",
                                             couchdb::NotABuiltinReduce(reduce)));
              }
            } else {
              AddFunction(item.second, {"views", *view, "reduce"}, spec, body, "reduce", alloc);
            }
          } else if (*key == "options") {
            if (ExpectMap(item.second, "a view's options")) {
              body.AddMember("options", Json(item.second, alloc), alloc);
            }
          }
        }
        if (!has_map) {
          problems_.Error(At(def.Mark()), absl::StrCat("view \"", *view, "\" has no map"));
        }
      }
      views.AddMember(String(*view, alloc), body, alloc);
    }
    spec.body.AddMember("views", views, alloc);
  }

  // An empty name (`"": myviews.townmap`) is stored, and no URL reaches it
  // (_design/d/_view/ names none): said at its line.
  bool Unreachable(const YAML::Node& key, const std::string& name, absl::string_view section) {
    if (!name.empty()) return false;
    problems_.Error(At(key.Mark()), absl::StrCat("an empty name in ", section,
                                                 ": no URL reaches it; name it"));
    return true;
  }

  void FunctionSection(const std::string& section, const YAML::Node& node,
                       DesignDocSpec& spec) {
    if (!ExpectMap(node, section)) return;
    Allocator& alloc = spec.body.GetAllocator();
    rapidjson::Value functions(rapidjson::kObjectType);
    std::set<std::string> seen;
    for (const auto& entry : node) {
      std::optional<std::string> name = Key(entry.first, seen);
      if (!name || Unreachable(entry.first, *name, section)) continue;
      AddFunction(entry.second, {section, *name}, spec, functions, *name, alloc);
    }
    spec.body.AddMember(String(section, alloc), functions, alloc);
  }

  // A top-level function such as validate_doc_update.
  void FunctionAt(const YAML::Node& node, std::vector<std::string> path, DesignDocSpec& spec) {
    std::string member = path.back();
    AddFunction(node, std::move(path), spec, spec.body, member, spec.body.GetAllocator());
  }

  // Adds `member: "<name>"` to `object` and records the name for version resolution.
  void AddFunction(const YAML::Node& node, std::vector<std::string> path, DesignDocSpec& spec,
                   rapidjson::Value& object, const std::string& member, Allocator& alloc) {
    // Its tag was refused already: its text is not the name its author meant (an !include's
    // file name), and looking it up would add an error about a module nobody named.
    if (refused_tags_.contains({node.Mark().line, node.Mark().column})) return;
    std::string where = absl::StrJoin(path, ".");
    if (node.IsSequence()) {
      // Kazoo's multi-line JavaScript: a function's source as a list of lines.
      problems_.Error(At(node.Mark()),
                      absl::StrCat(where,
                                   " is a list of lines (a function's source, as Kazoo writes "
                                   "multi-line JavaScript); named functions are names: write "
                                   "module.function and keep the code in a Python module"));
      return;
    }
    if (!node.IsScalar() || node.Scalar().empty()) {
      problems_.Error(At(node.Mark()),
                      absl::StrCat(where, " must name a function as module.function, found ",
                                   KindName(node)));
      return;
    }
    const std::string& name = node.Scalar();
    if (name.find('|') != std::string::npos) {
      problems_.Error(At(node.Mark()),
                      absl::StrCat(where, ": \"", name,
                                   "\" already has a |version; write the name without it and "
                                   "the version is read from the function's @version"));
      return;
    }
    // Control characters too: a name with a newline or an escape sequence is none, and was
    // printed raw to the terminal before the worker refused it in words that did not say why.
    const bool control = std::any_of(name.begin(), name.end(), [](char c) {
      return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
    });
    if (control || name.find(' ') != std::string::npos || name.find('.') == std::string::npos) {
      problems_.Error(At(node.Mark()),
                      absl::StrCat(where, ": \"", Printable(name),
                                   "\" is not a function name of the form module.function",
                                   control ? " (it holds a control character)" : ""));
      return;
    }
    if (name.size() > kMaxFunctionNameBytes) {
      // Said here, where it is: the worker refuses it too, but the resolution then reported
      // only that the name "was not resolved".
      problems_.Error(At(node.Mark()),
                      absl::StrCat(where, ": the function name \"",
                                   Printable(Utf8Prefix(name, 60)), "...\" is ", name.size(),
                                   " bytes long; at most ", kMaxFunctionNameBytes, " are taken"));
      return;
    }
    object.AddMember(String(member, alloc), String(name, alloc), alloc);
    spec.functions.push_back({std::move(path), name, At(node.Mark())});
  }

  // `key`: the mapping key `node` is the value of, if any, for the warnings.
  rapidjson::Value Json(const YAML::Node& node, Allocator& alloc, int depth = 0,
                        absl::string_view key = {}) {
    if (!Spend(node)) return rapidjson::Value(rapidjson::kNullType);
    if (depth >= limits_.max_depth) {
      // Aliases can also form a cycle (&a [*a]); this is where it ends.
      Exhausted(node.Mark(), absl::StrCat("is nested deeper than ", limits_.max_depth,
                                          " levels (aliases included)"));
      return rapidjson::Value(rapidjson::kNullType);
    }
    switch (node.Type()) {
      case YAML::NodeType::Scalar: {
        std::string error;
        rapidjson::Value value = PlainScalarToJson(node, alloc, error);
        if (!error.empty()) {
          problems_.Error(At(node.Mark()), error);
        } else {
          WarnYaml11Reading(node, value, key);
        }
        return value;
      }
      case YAML::NodeType::Sequence: {
        rapidjson::Value array(rapidjson::kArrayType);
        for (const auto& item : node) {
          if (exhausted_) break;
          array.PushBack(Json(item, alloc, depth + 1), alloc);
        }
        return array;
      }
      case YAML::NodeType::Map: {
        rapidjson::Value object(rapidjson::kObjectType);
        std::set<std::string> seen;
        for (const auto& entry : node) {
          if (exhausted_) break;
          std::optional<std::string> key = Key(entry.first, seen);
          if (key) {
            object.AddMember(String(*key, alloc), Json(entry.second, alloc, depth + 1, *key),
                             alloc);
          }
        }
        return object;
      }
      default: return rapidjson::Value(rapidjson::kNullType);
    }
  }

  // Charges one visited node (and its text) to the request's budget. False once the budget is
  // spent: every walk then stops descending, so the work done stays bounded by the budget.
  bool Spend(const YAML::Node& node) {
    if (exhausted_) return false;
    ++budget_.nodes;
    budget_.json_bytes += node.IsScalar() ? NodeCounter::ScalarJsonBytes(node.Scalar().size())
                                          : NodeCounter::kCollectionJsonBytes;
    if (budget_.nodes > limits_.max_nodes) {
      NodesExhausted(node.Mark());
      return false;
    }
    if (budget_.json_bytes > limits_.max_json_bytes) {
      JsonBytesExhausted(node.Mark());
      return false;
    }
    return true;
  }

  void JsonBytesExhausted(const YAML::Mark& mark) {
    Exhausted(mark, absl::StrCat("expands to more than ", limits_.max_json_bytes,
                                 " bytes of JSON, counting an alias each time it is used (the "
                                 "operator can raise cnp-server's --max-design-bytes)"));
  }

  void NodesExhausted(const YAML::Mark& mark) {
    Exhausted(mark, absl::StrCat("expands to more than ", limits_.max_nodes,
                                 " YAML nodes, counting an alias each time it is used (the "
                                 "operator can raise cnp-server's --max-yaml-nodes)"));
  }

  void Exhausted(const YAML::Mark& mark, absl::string_view why) {
    if (exhausted_) return;
    exhausted_ = true;
    problems_.Error(At(mark), absl::StrCat("the YAML ", why, "; it was not read further"));
  }

  const v1::UploadFile& file_;
  absl::string_view default_language_;
  const YamlLimits& limits_;
  YamlBudget& budget_;
  ProblemList& problems_;
  Classifications* classifications_;  // may be null: the caller does not want them
  bool exhausted_ = false;
  std::set<std::pair<int, int>> yaml11_warned_;  // the lines and columns warned of
  std::set<std::pair<int, int>> refused_tags_;    // the nodes whose tag was refused
};

}  // namespace

std::vector<DesignDocSpec> ParseDesignYaml(const v1::UploadFile& file,
                                           absl::string_view default_language,
                                           const YamlLimits& limits, YamlBudget& budget,
                                           ProblemList& problems) {
  return Parser(file, default_language, limits, budget, problems, nullptr).Parse();
}

std::vector<DesignDocSpec> ParseDesignYaml(const v1::UploadFile& file,
                                           absl::string_view default_language,
                                           const YamlLimits& limits, YamlBudget& budget,
                                           ProblemList& problems,
                                           Classifications& classifications) {
  return Parser(file, default_language, limits, budget, problems, &classifications).Parse();
}

void ResolveClassifications(const Classifications& classifications,
                            std::vector<DesignDocSpec>& specs, ProblemList& problems) {
  for (DesignDocSpec& spec : specs) {
    for (const ClassificationRef& ref : spec.classifications) {
      auto it = classifications.find(ref.name);
      if (it == classifications.end()) {
        std::vector<std::string> known;
        for (const auto& [name, unused] : classifications) known.push_back(name);
        problems.Error(ref.location,
                       absl::StrCat("classification \"", ref.name,
                                    "\" is not defined: give it under a top-level "
                                    "classifications: in one of the files",
                                    known.empty() ? std::string()
                                                  : absl::StrCat(" (defined: ",
                                                                 absl::StrJoin(known, ", "), ")")));
        continue;
      }
      for (const std::string& pattern : it->second.patterns) {
        spec.databases.push_back({pattern, ref.location, ref.name});
      }
    }
  }
}

std::vector<DesignDocSpec> ParseDesignYaml(const v1::UploadFile& file,
                                           absl::string_view default_language,
                                           ProblemList& problems) {
  YamlBudget budget;
  return Parser(file, default_language, YamlLimits(), budget, problems, nullptr).Parse();
}

}  // namespace cnp::upload
