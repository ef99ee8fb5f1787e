#include "client/derive/declaration.h"

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/closest_name.h"
#include "common/couchdb/database_name.h"
#include "common/file_text.h"
#include "common/yaml_strict_syntax.h"
#include "yaml-cpp/depthguard.h"
#include "yaml-cpp/yaml.h"

namespace cnp::derive {
namespace {

// " (did you mean 'handler'?)" for a key one or two edits from a known one, else the list.
std::string DidYouMean(const std::string& key, const std::vector<std::string>& known) {
  if (std::optional<std::string> meant = ClosestName(key, known)) {
    return absl::StrCat(" (did you mean '", *meant, "'?)");
  }
  return absl::StrCat(" (known: ", absl::StrJoin(known, ", "), ")");
}

// The instance's name is a part of its _local documents' ids (cnp-derive:NAME:lease, ...:status,
// ...:errors, ...:source:SOURCE), which go percent-encoded (up to three characters a byte) into
// URLs beside a database's name: a short label keeps them far below what servers and proxies
// take in a request line.
constexpr size_t kMaxNameBytes = 200;

// cnp-server's limit on a function's name (service/worker/function_name.h). A handler's name goes
// in the Resolve and Map calls, whose proto3 strings hold UTF-8 only: one that is not fails the
// Resolve call itself, which the check before writing takes for a service not answering yet; one
// that is longer or holds a control character is answered about under a shortened or escaped
// name, which that check cannot match to its stage. Either way the run went on to create the
// targets and take the lease before its Map call failed.
constexpr size_t kMaxHandlerBytes = 512;

// The code point at `text[i]` (advancing i), or nullopt when no valid UTF-8 starts there.
std::optional<uint32_t> NextCodePoint(absl::string_view text, size_t& i) {
  const unsigned char lead = static_cast<unsigned char>(text[i]);
  int length;
  uint32_t cp;
  if (lead < 0x80) {
    ++i;
    return lead;
  } else if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
    cp = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    cp = lead & 0x0F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    cp = lead & 0x07;
  } else {
    return std::nullopt;
  }
  if (text.size() - i < static_cast<size_t>(length)) return std::nullopt;
  for (int k = 1; k < length; ++k) {
    const unsigned char c = static_cast<unsigned char>(text[i + k]);
    if ((c & 0xC0) != 0x80) return std::nullopt;
    cp = (cp << 6) | (c & 0x3F);
  }
  // Overlong forms, UTF-16 surrogates and what lies past U+10FFFF are not UTF-8.
  if ((length == 3 && cp < 0x800) || (length == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    return std::nullopt;
  }
  i += length;
  return cp;
}

// Why `text`, the declaration's `what`, cannot go into an id, a JSON document, a call or a log
// line as it is; "" when it can. An id that is not UTF-8 is refused by the database
// (pouchdb-server answered HTTP 400 for the lease, after the target database was created), and a control character would let the
// text forge a line of cnp derive's log or drive the terminal.
std::string TextProblem(absl::string_view what, absl::string_view text, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return absl::StrCat(what, " is ", text.size(), " bytes long; at most ", max_bytes, " are taken");
  }
  for (size_t i = 0; i < text.size();) {
    const size_t at = i;
    std::optional<uint32_t> cp = NextCodePoint(text, i);
    if (!cp.has_value()) {
      return absl::StrCat(what, " is not valid UTF-8 (byte ",
                          absl::StrFormat("0x%02x", static_cast<unsigned char>(text[at])), " at offset ", at, ")");
    }
    if (*cp < 0x20 || (*cp >= 0x7F && *cp <= 0x9F)) {
      return absl::StrCat(what, " holds a control character (", absl::StrFormat("U+%04X", *cp), " at offset ", at,
                          ")");
    }
  }
  return "";
}

std::string NameProblem(absl::string_view name) {
  std::string problem = TextProblem("name", name, kMaxNameBytes);
  if (!problem.empty()) return problem;
  if (absl::StrContains(name, ':')) {
    // The ids' parts are told apart by it: cnp-derive:a:source:lease would be both instance a's
    // checkpoint of a source named lease and instance a:source's lease.
    return absl::StrCat("name '", name, "' holds ':', which separates the parts of the ids built from it "
                        "(_local/cnp-derive:NAME:lease, ...:source:SOURCE)");
  }
  return "";
}

// yaml-cpp's own word for this is "bad file".
constexpr absl::string_view kNestedTooDeeply =
    "lists and mappings are nested too deeply for the YAML reader";

absl::Status Problem(absl::string_view file, const YAML::Node& node, absl::string_view what) {
  std::string where(file);
  if (node.IsDefined() && node.Mark().line >= 0) absl::StrAppend(&where, ":", node.Mark().line + 1);
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

// yaml-cpp keeps every entry of a mapping, a repeated key's too, and node[key] finds the first:
// a source given twice would run two stages on one checkpoint, and a target given twice would
// merge silently. `cnp check` refuses repeated keys in design YAML alike.
absl::Status NoRepeatedKeys(absl::string_view file, const YAML::Node& map, absl::string_view at) {
  std::set<std::string> seen;
  for (const auto& entry : map) {
    if (!entry.first.IsScalar()) {
      return Problem(file, entry.first,
                     absl::StrCat("a key must be text, not a list or a mapping",
                                  at.empty() ? "" : " (in ", at, at.empty() ? "" : ")"));
    }
    const std::string key = entry.first.as<std::string>();
    if (!seen.insert(key).second) {
      return Problem(file, entry.first,
                     absl::StrCat("\"", key, "\" is given twice", at.empty() ? "" : " in ", at));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Stage> ParseStage(absl::string_view file, const std::string& target,
                                 const std::string& source, const YAML::Node& node) {
  std::string at = absl::StrCat("handlers.", target, ".", source);
  if (!node.IsMap()) return Problem(file, node, absl::StrCat(at, " must be a mapping with type, version, handler"));
  if (absl::Status s = NoRepeatedKeys(file, node, at); !s.ok()) return s;
  Stage stage;
  stage.target = target;
  stage.source = source;
  for (const auto& entry : node) {
    std::string key = entry.first.as<std::string>();
    const YAML::Node& value = entry.second;
    if (!value.IsScalar()) return Problem(file, value, absl::StrCat(at, ".", key, " must be a single value"));
    std::string text = value.as<std::string>();
    if (key == "type") {
      if (text != "map" && text != "reduce") {
        return Problem(file, value, absl::StrCat(at, ".type is '", text, "'; it must be map or reduce"));
      }
      stage.reduce = text == "reduce";
    } else if (key == "version") {
      // At most 2^53 - 1: the version is stored as a JSON number, which a CouchDB-compatible
      // server written in JavaScript keeps as a double; a larger one would read back changed,
      // and the stage would be re-run from scratch at every start.
      constexpr int64_t kMaxExactVersion = (int64_t{1} << 53) - 1;
      // Quoted ("1") it is text, which the rest of a declaration would not take for a number.
      if (value.Tag() == "!") {
        return Problem(file, value, absl::StrCat(at, ".version is the text \"", text,
                                                 "\"; write the number without quotes"));
      }
      if (!absl::SimpleAtoi(text, &stage.version) || stage.version < 0 || stage.version > kMaxExactVersion) {
        return Problem(file, value, absl::StrCat(at, ".version must be a whole number from 0 to ", kMaxExactVersion));
      }
    } else if (key == "handler") {
      stage.handler = text;
    } else if (key == "sources") {
      if (text != "true" && text != "false") {
        return Problem(file, value, absl::StrCat(at, ".sources must be true or false"));
      }
      stage.with_sources = text == "true";
    } else {
      return Problem(file, entry.first,
                     absl::StrCat(at, ": unknown field '", key, "'",
                                  DidYouMean(key, {"type", "version", "handler", "sources"})));
    }
  }
  for (const char* required : {"type", "version", "handler"}) {
    if (!node[required]) return Problem(file, node, absl::StrCat(at, " needs '", required, "'"));
  }
  if (stage.handler.empty()) return Problem(file, node, absl::StrCat(at, ".handler is empty"));
  if (std::string problem = TextProblem(absl::StrCat(at, ".handler"), stage.handler, kMaxHandlerBytes);
      !problem.empty()) {
    return Problem(file, node["handler"], problem);
  }
  if (stage.with_sources && !stage.reduce) {
    return Problem(file, node, absl::StrCat(at, ": sources: true is for reduce handlers only"));
  }
  return stage;
}

}  // namespace

absl::StatusOr<Declaration> ParseDeclaration(absl::string_view yaml, absl::string_view file) {
  YAML::Node root;
  try {
    // An unclosed quote took the handlers after it into its text, silently.
    CheckStrictYamlSyntax(std::string(yaml));
    // Every document of the stream: one after a `---` was dropped without a word, and its
    // handlers never ran. Empty ones (a lone `---`) hold nothing to drop.
    std::vector<YAML::Node> documents;
    for (YAML::Node& document : YAML::LoadAll(std::string(yaml))) {
      if (!document.IsNull()) documents.push_back(std::move(document));
    }
    if (documents.size() > 1) {
      return Problem(file, documents[1],
                     absl::StrCat("this file holds ", documents.size(),
                                  " YAML documents (each `---` starts one); a declaration is "
                                  "one mapping with name and handlers"));
    }
    if (!documents.empty()) root = documents.front();
  } catch (const YAML::DeepRecursion& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ":", e.mark.line + 1, ": ",
                                                   kNestedTooDeeply));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ":", e.mark.line + 1, ": ", e.msg));
  }
  if (!root.IsMap()) return absl::InvalidArgumentError(absl::StrCat(file, ": expected a mapping with name and handlers"));
  Declaration declaration;
  std::vector<Stage> maps, reduces;
  try {
    if (absl::Status s = NoRepeatedKeys(file, root, ""); !s.ok()) return s;
    if (!root["name"] || !root["name"].IsScalar() || root["name"].as<std::string>().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": needs 'name', the instance's name (its lease, checkpoints and status)"));
    }
    declaration.name = root["name"].as<std::string>();
    if (std::string problem = NameProblem(declaration.name); !problem.empty()) {
      return Problem(file, root["name"], problem);
    }
    for (const auto& entry : root) {
      std::string key = entry.first.as<std::string>();
      if (key != "name" && key != "handlers") {
        return Problem(file, entry.first,
                       absl::StrCat("unknown field '", key, "'", DidYouMean(key, {"name", "handlers"})));
      }
    }
    const YAML::Node handlers = root["handlers"];
    if (!handlers || !handlers.IsMap() || handlers.size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": needs 'handlers': target -> source -> {type, version, handler}"));
    }
    if (absl::Status s = NoRepeatedKeys(file, handlers, "handlers"); !s.ok()) return s;
    for (const auto& target_entry : handlers) {
      std::string target = target_entry.first.as<std::string>();
      // Derived documents' ids rely on a database name holding no ':', as CouchDB's rule says.
      if (!couchdb::IsDatabaseName(target)) {
        return Problem(file, target_entry.first, absl::StrCat("'", target, "' is not a CouchDB database name: ",
                                                                couchdb::kDatabaseNameRule));
      }
      if (!target_entry.second.IsMap() || target_entry.second.size() == 0) {
        return Problem(file, target_entry.second, absl::StrCat("handlers.", target, " must map source databases to handlers"));
      }
      if (absl::Status s = NoRepeatedKeys(file, target_entry.second, absl::StrCat("handlers.", target)); !s.ok()) {
        return s;
      }
      for (const auto& source_entry : target_entry.second) {
        std::string source = source_entry.first.as<std::string>();
        if (!couchdb::IsDatabaseName(source)) {
          return Problem(file, source_entry.first, absl::StrCat("'", source, "' is not a CouchDB database name: ",
                                                                  couchdb::kDatabaseNameRule));
        }
        if (source == target) return Problem(file, source_entry.first, absl::StrCat(target, " cannot be its own source"));
        absl::StatusOr<Stage> stage = ParseStage(file, target, source, source_entry.second);
        if (!stage.ok()) return stage.status();
        (stage->reduce ? reduces : maps).push_back(*std::move(stage));
      }
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ":", e.mark.line + 1, ": ", e.msg));
  }
  // qvarn-mr's rules: a reduce target has one source, and that source is a map target.
  std::set<std::string> map_targets;
  for (const Stage& s : maps) map_targets.insert(s.target);
  std::set<std::string> reduce_targets;
  for (const Stage& s : reduces) {
    if (!reduce_targets.insert(s.target).second) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": reduce target ", s.target, " has more than one source; it may have only one"));
    }
    if (map_targets.count(s.target) > 0) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": ", s.target, " has both map and reduce handlers"));
    }
    if (map_targets.count(s.source) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": the source of reduce target ", s.target, " is ", s.source,
          ", which is not a map target of this declaration"));
    }
  }
  for (const Stage& s : maps) {
    if (map_targets.count(s.source) > 0 || reduce_targets.count(s.source) > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": map source ", s.source, " is itself a target; map handlers read source databases"));
    }
  }
  declaration.stages = std::move(maps);
  for (Stage& s : reduces) declaration.stages.push_back(std::move(s));
  return declaration;
}

absl::StatusOr<Declaration> ReadDeclaration(const std::string& path) {
  // "-" is standard input, as for cnp upload: the declaration is read once, at the start.
  const bool from_stdin = path == "-";
  const std::string name = from_stdin ? "stdin" : path;
  absl::StatusOr<std::string> text =
      ReadFileText(from_stdin ? "/dev/stdin" : path, int64_t{1} << 20);
  if (!text.ok() && from_stdin) {
    // Said as the user gave it: "-", not the file it is read through.
    return absl::Status(text.status().code(),
                        absl::StrReplaceAll(text.status().message(),
                                            {{"/dev/stdin", "stdin"}}));
  }
  if (!text.ok()) return text.status();
  if (text->size() > (size_t{1} << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": larger than 1 MiB; a declaration is a few lines"));
  }
  return ParseDeclaration(*text, name);
}

}  // namespace cnp::derive
