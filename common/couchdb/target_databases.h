// The databases a design document's `databases:` entries name: plain names as they are, glob
// patterns (*, ?, [...]) matched against the server's _all_dbs.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace cnp::couchdb {

bool IsDatabasePattern(absl::string_view entry);

// The names in `all_dbs` that `pattern` matches, in their order. System databases (names
// starting with '_') match only a pattern that itself starts with '_', so "*" never reaches
// _users or _replicator.
std::vector<std::string> MatchDatabases(absl::string_view pattern,
                                        const std::vector<std::string>& all_dbs);

}  // namespace cnp::couchdb
