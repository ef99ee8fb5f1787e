// Where each of cnp-server's settings came from - the command line, the config file (its key
// and the line and column of its value), or the default - and how an error about one names it
// where the operator wrote it. Internal to service/config.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "yaml-cpp/mark.h"

namespace cnp::config {

// Where the config file set a setting: its key as written, and the positions of the key, the
// value and, for a repeatable setting, each element.
struct FilePlace {
  std::string key;
  YAML::Mark key_mark;
  YAML::Mark value_mark;
  std::vector<YAML::Mark> item_marks;
};

// Where each setting came from, so that an error can point at what the operator wrote.
struct Sources {
  std::map<std::string, std::vector<std::string>> repeated;  // the repeatable flags' values
  std::set<std::string> on_command_line;                     // flag names, with underscores
  std::map<std::string, FilePlace> in_file;                  // by flag name, with underscores
  std::string config_file;  // --config, in either spelling (--config=F or --config F)

  // Where the file set `name` if the value in force is the file's: the command line wins.
  const FilePlace* FromFile(absl::string_view name) const {
    if (on_command_line.count(std::string(name))) return nullptr;
    auto it = in_file.find(std::string(name));
    return it == in_file.end() ? nullptr : &it->second;
  }
};

// "FILE:LINE:COLUMN", both counted from 1 as editors show them (yaml-cpp counts from 0).
std::string Position(absl::string_view file, const YAML::Mark& mark);

// How a message about setting `name` (absl's spelling) begins, naming it where the operator
// wrote it: "FILE:LINE:COLUMN: key:" at its value in the config file (at its `item`-th element
// for a list), or "--flag" for a value from the command line or a default. The command line wins
// over the file, so a value it gave is the flag's.
std::string Subject(const Sources& sources, absl::string_view name, int item = -1);

// Another setting a message mentions, in the words of the one it is about: "max-call-bytes at
// line 3" from the file, "--max-call-bytes" on the command line. `in_file` says whether the
// message is about a value from the file.
std::string Mention(const Sources& sources, absl::string_view name, bool in_file);

// `status`, which another module worded about the flag ("--allow-uid: no user named 'x'",
// "--couchdb-allow=URL: ...", "--python-path DIR is not a directory"), reworded about the file's
// line when the value came from there: its "--flag" start gives way to "FILE:LINE:COLUMN: key:".
absl::Status Reattribute(const Sources& sources, absl::string_view name, int item,
                         const absl::Status& status, absl::string_view value = "");

// A setting outside its range: "--max-queue must be 0 (no call waits) or more; got -1", or
// "FILE:LINE:COLUMN: max-queue: must be ...".
absl::Status OutOfRange(const Sources& sources, absl::string_view name, absl::string_view range,
                        absl::string_view got);

}  // namespace cnp::config
