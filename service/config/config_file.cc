#include "service/config/config_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/command_line_flags.h"
#include "common/yaml_strict_syntax.h"
#include "common/yaml_syntax_note.h"
#include "common/trusted_file.h"
#include "service/config/server_settings.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace cnp::config {
namespace {

// What a YAML node holds, in the words of an error message: "a map", "a list", "'abc'".
std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Null: return "nothing";
    case YAML::NodeType::Scalar: return absl::StrCat("'", node.Scalar(), "'");
    default: return "nothing";
  }
}

// "FILE:LINE:COLUMN: key: problem", or "FILE:LINE:COLUMN: problem" for the file as a whole.
absl::Status ConfigError(const std::string& path, const YAML::Mark& mark, absl::string_view key,
                         absl::string_view problem) {
  if (key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(Position(path, mark), ": ", problem));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(Position(path, mark), ": ", key, ": ", problem));
}

// What to write instead of a bad value of `flag`: its default, as the file spells it.
std::string ExampleOf(const absl::CommandLineFlag& flag, absl::string_view key) {
  const std::string value = flag.DefaultValue();
  if (value.empty()) return "";
  return absl::StrCat("; write e.g. '", key, ": ", value, "' (the default)");
}

absl::Status ApplyYamlEntry(const std::string& path, const YAML::Node& key_node,
                            const YAML::Node& value, Sources& sources) {
  if (!key_node.IsScalar()) {
    return ConfigError(path, key_node.Mark(), "",
                       absl::StrCat("expected a setting name, found ", Describe(key_node)));
  }
  std::string name = key_node.Scalar();
  const std::string key = name;
  for (char& c : name) if (c == '-') c = '_';
  if (name == "config") {
    // It is in --help, so "unknown setting (--help lists every setting)" sent the reader back to
    // the list that names it (found by a review).
    return ConfigError(path, key_node.Mark(), key,
                       "cannot be set in a config file (give --config on the command line)");
  }
  absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  if (flag == nullptr || !IsServerSetting(*flag)) {
    // A misspelt key silently ignored would leave its setting at the default in production.
    const std::optional<std::string> meant = ClosestSetting(name);
    return ConfigError(
        path, key_node.Mark(), key,
        absl::StrCat("unknown setting",
                     meant.has_value() ? absl::StrCat("; did you mean '", *meant, "'?") : "",
                     " (cnp-server --help lists every setting; each is a key here)"));
  }
  // A value-less key (`workers:`) has no position of its own (yaml-cpp gives where the next
  // token starts, often the next line): point at the key.
  const YAML::Mark value_mark =
      value.IsNull() || value.Mark().is_null() ? key_node.Mark() : value.Mark();
  // yaml-cpp keeps both entries of a key written twice, and the last would silently win.
  if (auto [first, inserted] = sources.in_file.emplace(
          name, FilePlace{.key = key, .key_mark = key_node.Mark(), .value_mark = value_mark});
      !inserted) {
    return ConfigError(path, key_node.Mark(), key,
                       absl::StrCat("set a second time (first at ",
                                    Position(path, first->second.key_mark), "); keep one"));
  }
  FilePlace& place = sources.in_file[name];
  const bool from_command_line = sources.on_command_line.count(name) > 0;
  if (IsRepeatable(name)) {
    std::vector<std::string> values;
    // Commas separate values here as on the command line (--allow-module=a,b): taken whole,
    // `allow-module: "a,b"` was one prefix that matched no module. Each value is named at the
    // string it came from.
    // False when the text has an empty element between values ("a,,b", "a,"): a list that
    // may have lost a value to an unset variable.
    auto add = [&values, &place](const std::string& text, const YAML::Mark& mark) {
      bool whole = true;
      for (absl::string_view v : absl::StrSplit(text, ',')) {
        if (v.empty()) {
          whole = false;
          continue;
        }
        values.emplace_back(v);
        place.item_marks.push_back(mark);
      }
      return whole || text.find_first_not_of(',') == std::string::npos;
    };
    constexpr absl::string_view kEmptyElement =
        "an empty element (two commas together, or one at an end); write the values "
        "separated by single commas";
    if (value.IsScalar()) {
      if (!add(value.Scalar(), value_mark)) {
        return ConfigError(path, value_mark, key, kEmptyElement);
      }
    } else if (value.IsSequence()) {
      for (const YAML::Node& item : value) {
        if (!item.IsScalar()) {
          return ConfigError(path, item.Mark().is_null() ? value_mark : item.Mark(), key,
                             absl::StrCat("expected a list of strings, found ", Describe(item),
                                          " in the list; write each element as one string"));
        }
        // Empty or only commas: no value, as --allow-module=, is none.
        if (item.Scalar().find_first_not_of(',') == std::string::npos) {
          return ConfigError(path, item.Mark().is_null() ? value_mark : item.Mark(), key,
                             "an empty element; remove it, or give a value");
        }
        if (!add(item.Scalar(), item.Mark())) {
          return ConfigError(path, item.Mark().is_null() ? value_mark : item.Mark(), key,
                             kEmptyElement);
        }
      }
    } else {
      return ConfigError(path, value_mark, key,
                         absl::StrCat("expected a list of strings (or one string), found ",
                                      Describe(value)));
    }
    // An empty value (an unset variable in a templated file) must not quietly mean the
    // default, which for allow-module is "every module".
    if (values.empty() || std::any_of(values.begin(), values.end(),
                                      [](const std::string& v) { return v.empty(); })) {
      return ConfigError(path, value_mark, key,
                         "an empty value; give at least one, or leave the key out");
    }
    if (!from_command_line) sources.repeated[name] = std::move(values);
    return absl::OkStatus();
  }
  if (!value.IsScalar()) {
    return ConfigError(path, value_mark, key,
                       absl::StrCat("expected ", ExpectedFlagValue(*flag), ", found ", Describe(value),
                                    ExampleOf(*flag, key)));
  }
  if (value.Scalar().empty() && RefusesEmptyValue(*flag)) {
    return ConfigError(path, value_mark, key, "an empty value; give one, or leave the key out");
  }
  // YAML 1.2, the file's language, has true and false only; absl also reads yes, y, t and 1,
  // which other YAML readers take for strings or numbers (and YAML 1.1's for on and off).
  static const absl::flat_hash_set<std::string> kYamlBooleans = {"true",  "True",  "TRUE",
                                                                 "false", "False", "FALSE"};
  const bool not_yaml_boolean =
      flag->IsOfType<bool>() && !kYamlBooleans.contains(value.Scalar());
  // absl's own words ("Illegal value 'x' specified for flag 'max_queue'") name the flag, which
  // the operator of a file never wrote; ours say the same.
  std::string ignored;
  if (not_yaml_boolean || !flag->ParseFrom(value.Scalar(), &ignored)) {
    if (std::string bound = OutOfWholeNumberRange(*flag, value.Scalar()); !bound.empty()) {
      return ConfigError(path, value_mark, key, absl::StrCat(bound, "; found ", value.Scalar()));
    }
    return ConfigError(path, value_mark, key,
                       absl::StrCat("expected ", ExpectedFlagValue(*flag), ", found ", Describe(value),
                                    ExampleOf(*flag, key)));
  }
  return absl::OkStatus();
}

// A config file is a few kilobytes; this bounds what a wrong path (/dev/zero) can cost.
constexpr size_t kMaxConfigBytes = 1 << 20;

absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  auto cannot = [&path](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read config file ", path, ": ", why));
  };
  // A device holds no settings, and the trust check's advice for one every user may write
  // (/dev/null: `chmod go-w /dev/null`) would break the host: refused by what stat says, before
  // an open that could have effects of its own (a socket cannot be opened at all). A pipe is
  // read as cat reads it (--config=<(...) is one).
  auto not_a_file = [&cannot](const struct stat& st) -> std::optional<absl::Status> {
    if (S_ISDIR(st.st_mode)) return cannot("it is a directory; give the YAML file");
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISSOCK(st.st_mode)) {
      return cannot(absl::StrCat("it is a ", S_ISSOCK(st.st_mode) ? "socket" : "device",
                                 ", not a file; give the YAML file"));
    }
    return std::nullopt;
  };
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (std::optional<absl::Status> refused = not_a_file(st)) return *refused;
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return cannot(std::strerror(errno));
  // What was opened, which may have been replaced since the stat.
  if (::fstat(fd, &st) != 0) st = {};
  if (std::optional<absl::Status> refused = not_a_file(st)) {
    ::close(fd);
    return *refused;
  }
  // Its settings decide whom the server lets in (--allow-uid) and what it runs as workers
  // (--worker-binary): a file another user may change would hand them this server's user.
  if (absl::Status trusted = CheckTrustedFile(path, st, "config file",
                                              "change the settings cnp-server obeys");
      !trusted.ok()) {
    ::close(fd);
    return trusted;
  }
  std::string text;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      return cannot(std::strerror(error));
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > kMaxConfigBytes) {
      ::close(fd);
      return cannot(absl::StrCat("larger than ", kMaxConfigBytes, " bytes"));
    }
  }
  ::close(fd);
  return text;
}

// Where each YAML document of a file starts: its `---`, or its first token. Nodes carry no
// mark of the `---` before them, and it is the line the operator has to find.
class DocumentStarts : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> marks;
  void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

YAML::Mark SecondDocumentStart(const std::string& text) {
  std::istringstream stream(text);
  YAML::Parser parser(stream);
  DocumentStarts starts;
  while (starts.marks.size() < 2 && parser.HandleNextDocument(starts)) {
  }
  return starts.marks.size() < 2 ? YAML::Mark::null_mark() : starts.marks[1];
}

}  // namespace

absl::Status ApplyConfigFile(const std::string& path, Sources& sources) {
  absl::StatusOr<std::string> text = ReadConfigFile(path);
  if (!text.ok()) return text.status();
  try {
    // An unclosed quote took the settings after it into its text, silently.
    CheckStrictYamlSyntax(*text);
    // YAML::Load reads the first document alone: the settings after a `---` were silently
    // left at their defaults.
    const std::vector<YAML::Node> documents = YAML::LoadAll(*text);
    if (documents.size() > 1) {
      return ConfigError(path, SecondDocumentStart(*text), "",
                         "a second YAML document; cnp-server reads one: move its settings above "
                         "this `---` and remove it");
    }
    YAML::Node root = documents.empty() ? YAML::Node() : documents.front();
    if (root.IsNull()) return absl::OkStatus();  // an empty file sets nothing
    if (!root.IsMap()) {
      return ConfigError(path, root.Mark(), "",
                         absl::StrCat("expected a map of setting names to values, found ",
                                      Describe(root)));
    }
    for (const auto& entry : root) {
      if (absl::Status s = ApplyYamlEntry(path, entry.first, entry.second, sources); !s.ok()) {
        return s;
      }
    }
  } catch (const YAML::Exception& e) {
    // Syntax errors, and anything the checks above did not foresee.
    return ConfigError(path, e.mark, "",
                       absl::StrCat(e.msg, YamlSyntaxNote(*text, e.mark.line, e.msg)));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config file ", path, ": ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace cnp::config
