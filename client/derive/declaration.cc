#include "client/derive/declaration.h"

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/file_text.h"
#include "yaml-cpp/yaml.h"

namespace cnp::derive {
namespace {

// CouchDB's rule for database names; ids of derived documents rely on a name holding no ':'.
bool IsDatabaseName(absl::string_view name) {
  if (name.empty() || !absl::ascii_islower(name[0])) return false;
  for (char c : name) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_' || c == '$' || c == '(' ||
          c == ')' || c == '+' || c == '-' || c == '/')) {
      return false;
    }
  }
  return true;
}

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
      if (!absl::SimpleAtoi(text, &stage.version) || stage.version < 0) {
        return Problem(file, value, absl::StrCat(at, ".version must be a whole number >= 0"));
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
                     absl::StrCat(at, ": unknown field '", key,
                                  "' (known: type, version, handler, sources)"));
    }
  }
  for (const char* required : {"type", "version", "handler"}) {
    if (!node[required]) return Problem(file, node, absl::StrCat(at, " needs '", required, "'"));
  }
  if (stage.handler.empty()) return Problem(file, node, absl::StrCat(at, ".handler is empty"));
  if (stage.with_sources && !stage.reduce) {
    return Problem(file, node, absl::StrCat(at, ": sources: true is for reduce handlers only"));
  }
  return stage;
}

}  // namespace

absl::StatusOr<Declaration> ParseDeclaration(absl::string_view yaml, absl::string_view file) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
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
    for (const auto& entry : root) {
      std::string key = entry.first.as<std::string>();
      if (key != "name" && key != "handlers") {
        return Problem(file, entry.first, absl::StrCat("unknown field '", key, "' (known: name, handlers)"));
      }
    }
    const YAML::Node handlers = root["handlers"];
    if (!handlers || !handlers.IsMap() || handlers.size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": needs 'handlers': target -> source -> {type, version, handler}"));
    }
    if (absl::Status s = NoRepeatedKeys(file, handlers, "handlers"); !s.ok()) return s;
    for (const auto& target_entry : handlers) {
      std::string target = target_entry.first.as<std::string>();
      if (!IsDatabaseName(target)) {
        return Problem(file, target_entry.first, absl::StrCat("'", target, "' is not a CouchDB database name"));
      }
      if (!target_entry.second.IsMap() || target_entry.second.size() == 0) {
        return Problem(file, target_entry.second, absl::StrCat("handlers.", target, " must map source databases to handlers"));
      }
      if (absl::Status s = NoRepeatedKeys(file, target_entry.second, absl::StrCat("handlers.", target)); !s.ok()) {
        return s;
      }
      for (const auto& source_entry : target_entry.second) {
        std::string source = source_entry.first.as<std::string>();
        if (!IsDatabaseName(source)) {
          return Problem(file, source_entry.first, absl::StrCat("'", source, "' is not a CouchDB database name"));
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
  absl::StatusOr<std::string> text = ReadFileText(path, int64_t{1} << 20);
  if (!text.ok()) return text.status();
  if (text->size() > (size_t{1} << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": larger than 1 MiB; a declaration is a few lines"));
  }
  return ParseDeclaration(*text, path);
}

}  // namespace cnp::derive
