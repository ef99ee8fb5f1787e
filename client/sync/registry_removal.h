// `cnp upload --register REGISTRY_DB --remove COUCHDB_URL NAME...`: takes design documents out
// of a cnp sync registry. An entry is not deleted but marked removed (a tombstone that keeps
// its name, target and last design document), because cnp sync has to see it to take the
// design document out of the databases it put it in (see registry_sync.h); registering the
// design document again brings the entry back.
//
//   absl::Status status = RemoveRegistered(couch, "cnp_registry", {"towns"}, false, 0, emit);
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/sync/registry_sync.h"
#include "common/couchdb/couch_client.h"

namespace cnp::client::sync {

// Marks removed every entry of each of `names`: a design document's name ("towns" or
// "_design/towns") means all of its entries, an entry's id ("towns@classification:account")
// that one. A name with no entry is an error (NOT_FOUND), reported like the others through
// `emit`; an entry already removed is UNCHANGED. With `dry_run` nothing is written. An entry
// edited meanwhile (HTTP 409) is re-read and retried up to `max_conflict_retries` times (0:
// kDefaultMaxConflictRetries), as --max-conflict-retries says.
inline constexpr int kDefaultMaxConflictRetries = 3;
absl::Status RemoveRegistered(::cnp::couchdb::CouchClient& couch, const std::string& registry,
                              const std::vector<std::string>& names, bool dry_run,
                              int max_conflict_retries, const RegistrySync::Emit& emit);

}  // namespace cnp::client::sync
