// cnp sync's record, in a database, of a design document it wrote there:
// _local/cnp-sync:<name> (a _local document, so it is never replicated). Only a design
// document whose record vouches for its current revision is cnp sync's to take out again.
//
//   {"registry": "cnp_registry", "entry": "towns@classification:account",
//    "design_doc": "_design/towns", "design_rev": "3-abc"}
//
// A write is announced before it is made: the record first says what cnp sync is about to
// write over which revision ("writing": the document, "design_rev": the revision it writes
// over, "" when it creates one), and is settled to the written revision after. A sync stopped
// between the two (killed, CouchDB refusing the second write) thus leaves a record that can
// still tell the written document from anyone else's: the stored one is cnp sync's when it
// is exactly what was announced and its previous revision is the announced one (for a
// created one: it has no previous revision). A program that does not know "writing" reads
// design_rev, which no longer matches, and leaves the design document in place: the safe
// side.
//
//   absl::StatusOr<std::optional<OwnershipRecord>> record = ReadOwnershipRecord(couch, db, "towns");
//   absl::StatusOr<std::string> rev = VouchedRevision(couch, db, "towns", **record, stored_rev);
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/couchdb/couch_client.h"
#include "rapidjson/document.h"

namespace cnp::client::sync {

struct OwnershipRecord {
  std::string record_rev;  // the _local document's own revision ("" when not stored yet)
  std::string registry;
  std::string entry;       // the registry entry's id
  std::string design_rev;  // the revision written (settled), or written over (announced)
  // Announced: the design document cnp sync is writing over design_rev.
  std::optional<rapidjson::Document> writing;
};

// The record of `name` in `database`: none (HTTP 404, or not a JSON object), or what it says.
absl::StatusOr<std::optional<OwnershipRecord>> ReadOwnershipRecord(
    ::cnp::couchdb::CouchClient& couch, const std::string& database, const std::string& name);

// Stores `record` (over record.record_rev when set) and sets record.record_rev to the new
// revision. HTTP 409 (another writer changed the record) is ABORTED.
absl::Status WriteOwnershipRecord(::cnp::couchdb::CouchClient& couch,
                                  const std::string& database, const std::string& name,
                                  OwnershipRecord& record);

// Deletes the record (its revision record.record_rev); a failure only leaves a stale record.
void DeleteOwnershipRecord(::cnp::couchdb::CouchClient& couch, const std::string& database,
                           const std::string& name, const OwnershipRecord& record);

// The revision of _design/<name> that `record` vouches for, given the stored one's
// (`stored_rev`, "" when there is none): a settled record's design_rev; for an announced one,
// `stored_rev` when the stored document is the announced write (see above), else design_rev.
// Reads the stored document's revision history for an announced record only.
absl::StatusOr<std::string> VouchedRevision(::cnp::couchdb::CouchClient& couch,
                                            const std::string& database,
                                            const std::string& name,
                                            const OwnershipRecord& record,
                                            const std::string& stored_rev);

// The names among `names` that have a record in `database`: from _local_docs where the server
// has it, else (pouchdb-server, say) by reading each name's record.
absl::StatusOr<std::vector<std::string>> NamesWithOwnershipRecords(
    ::cnp::couchdb::CouchClient& couch, const std::string& database,
    const std::vector<std::string>& names);

}  // namespace cnp::client::sync
