#include "common/couchdb/target_databases.h"

#include <fnmatch.h>

#include <string>

namespace cnp::couchdb {

bool IsDatabasePattern(absl::string_view entry) {
  return entry.find_first_of("*?[") != absl::string_view::npos;
}

std::vector<std::string> MatchDatabases(absl::string_view pattern,
                                        const std::vector<std::string>& all_dbs) {
  std::string glob(pattern);
  bool system_too = !glob.empty() && glob[0] == '_';
  std::vector<std::string> matched;
  for (const std::string& db : all_dbs) {
    if (!system_too && !db.empty() && db[0] == '_') continue;
    if (fnmatch(glob.c_str(), db.c_str(), 0) == 0) matched.push_back(db);
  }
  return matched;
}

}  // namespace cnp::couchdb
