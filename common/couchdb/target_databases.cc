#include "common/couchdb/target_databases.h"

#include <fnmatch.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/couchdb/database_name.h"

namespace cnp::couchdb {

bool IsDatabasePattern(absl::string_view entry) {
  return entry.find_first_of("*?[") != absl::string_view::npos;
}

bool CanMatchADatabase(absl::string_view entry) {
  if (ReachesSystemDatabases(entry)) return true;
  if (!IsDatabasePattern(entry)) return IsDatabaseName(entry);
  // fnmatch's syntax: * and ? match any characters, a backslash makes the next character
  // literal, and a set ([a-z], [[:digit:]], [^x]...) is taken as able to match, as is all
  // that follows it: only a pattern sure to match nothing is refused. A literal character
  // must be one a name may hold, and a literal first one a lowercase letter.
  for (size_t i = 0; i < entry.size(); ++i) {
    if (entry[i] == '*' || entry[i] == '?') continue;
    if (entry[i] == '[') return true;
    const bool first = i == 0;
    if (entry[i] == '\\' && i + 1 < entry.size()) ++i;
    const char c = entry[i];
    if (!IsDatabaseNameCharacter(c) || (first && !absl::ascii_islower(c))) return false;
  }
  return true;
}

std::vector<std::string> MatchDatabases(absl::string_view pattern,
                                        const std::vector<std::string>& all_dbs) {
  std::string glob(pattern);
  bool system_too = ReachesSystemDatabases(glob);
  std::vector<std::string> matched;
  for (const std::string& db : all_dbs) {
    if (!system_too && IsSystemDatabase(db)) continue;
    if (fnmatch(glob.c_str(), db.c_str(), 0) == 0) matched.push_back(db);
  }
  return matched;
}

bool IsSystemDatabase(absl::string_view name) { return absl::StartsWith(name, "_"); }

absl::Status RefuseSystemRegistry(absl::string_view registry) {
  if (!IsSystemDatabase(registry)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "the registry database ", registry, " is one of CouchDB's system databases (a name "
      "starting with '_'), which hold what CouchDB itself reads and refuse other documents: "
      "name a database of its own, such as cnp_registry"));
}

bool ReachesSystemDatabases(absl::string_view entry) { return absl::StartsWith(entry, "_"); }

bool IsSystemDesignName(absl::string_view name) { return absl::StartsWith(name, "_"); }

absl::Status CheckNotSystemTarget(absl::string_view what, absl::string_view design_name,
                                  absl::string_view database_entry) {
  if (IsSystemDesignName(design_name)) {
    return absl::PermissionDeniedError(absl::StrCat(
        what, " names _design/", design_name,
        ": a design document whose name starts with '_' is one of CouchDB's own (such as "
        "_users/_design/_auth); refused without ",
        kAllowSystemDatabasesFlag));
  }
  if (ReachesSystemDatabases(database_entry)) {
    return absl::PermissionDeniedError(absl::StrCat(
        what, " targets \"", database_entry,
        "\": a system database (a name starting with '_', such as _users or _replicator) "
        "holds CouchDB's own rules; refused without ",
        kAllowSystemDatabasesFlag));
  }
  return absl::OkStatus();
}

}  // namespace cnp::couchdb
