// The databases a design document's `databases:` entries name: plain names as they are, glob
// patterns (*, ?, [...]) matched against the server's _all_dbs. And what no registry entry or
// YAML file may reach unless the operator says so: CouchDB's own databases and design
// documents.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace cnp::couchdb {

// The flag (of cnp sync and cnp upload) that lets design documents into system databases.
inline constexpr char kAllowSystemDatabasesFlag[] = "--allow-system-databases";

bool IsDatabasePattern(absl::string_view entry);

// False for a `databases:` entry that no database CouchDB creates can have or match: a name
// against CouchDB's rule (database_name.h), a pattern whose literal characters before any
// [set] break it ("Accounts-*", "5*"). Entries starting with '_' are CouchDB's own names, of
// any form.
bool CanMatchADatabase(absl::string_view entry);

// The names in `all_dbs` that `pattern` matches, in their order. System databases (names
// starting with '_') match only a pattern that itself starts with '_', so "*" never reaches
// _users or _replicator.
std::vector<std::string> MatchDatabases(absl::string_view pattern,
                                        const std::vector<std::string>& all_dbs);

// CouchDB's own databases (_users, _replicator, _global_changes, ...): a name starting with
// '_'. A design document there is a security rule of CouchDB's (_users/_design/_auth keeps
// users from giving themselves roles).
bool IsSystemDatabase(absl::string_view name);

// INVALID_ARGUMENT for a registry database (cnp upload --register, cnp sync) that is one of
// CouchDB's system databases: they hold users, replications, what CouchDB itself reads, and
// validate what is written there in their own terms (whatever --allow-system-databases says,
// which is about the databases the entries reach).
absl::Status RefuseSystemRegistry(absl::string_view registry);

// A `databases:` entry that can reach a system database: a name or a pattern starting with
// '_' (the only patterns MatchDatabases lets match one).
bool ReachesSystemDatabases(absl::string_view entry);

// A design document name starting with '_' (_design/_auth) is CouchDB's own.
bool IsSystemDesignName(absl::string_view name);

// OK, or why `design_name` or `database_entry` (a name or pattern; empty for none) is refused
// without kAllowSystemDatabasesFlag: `what` says whose target it is, e.g. `registry entry
// "towns@database:_users"`.
absl::Status CheckNotSystemTarget(absl::string_view what, absl::string_view design_name,
                                  absl::string_view database_entry);

}  // namespace cnp::couchdb
