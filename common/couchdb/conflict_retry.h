// Writing one document as cnp writes design documents and registry entries: read the stored
// one, let the caller compare and decide, write with the stored "_rev", and after a concurrent
// edit (HTTP 409) read, compare and decide again instead of overwriting it, a bounded number of
// times. One loop for cnp-server's upload and registration, cnp sync and cnp upload --remove,
// so that they retry, report and give up alike.
//
//   absl::StatusOr<WriteResult> result = WriteWithConflictRetry(couch,
//       {.path = DesignDocPath("db", "towns"), .id = "_design/towns", .database = "db",
//        .activity = "uploading"},
//       [&](const StoredDocument& stored, int attempt) -> absl::StatusOr<WriteDecision> {
//         ...compare with stored.doc; std::nullopt to write nothing...
//       });
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/couchdb/couch_client.h"
#include "rapidjson/document.h"

namespace cnp::couchdb {

// The document as CouchDB has it: none (HTTP 404), or its body without "_rev", and that rev.
struct StoredDocument {
  std::optional<rapidjson::Document> doc;
  std::string rev;
  // Its conflicting revisions (replication), if any, when read with_conflicts.
  std::vector<std::string> conflicts;
};

struct ConflictRetriedWrite {
  std::string path;      // escaped: DesignDocPath(...), or DatabasePath(db) + "/" + EscapeSegment(id)
  std::string id;        // for messages: "_design/towns", "towns@classification:account"
  std::string database;  // for messages
  // What was going on, for the messages about a conflict ("uploading": "... while uploading").
  std::string activity;
  int max_conflict_retries = 3;  // conflicts retried before giving up (ABORTED)
  // A missing document is an error (NOT_FOUND, from reading it), not "none stored".
  bool must_exist = false;
  // Read with its conflicting revisions (StoredDocument::conflicts), for a writer that says
  // so: one that says nothing of them leaves them behind unseen, and CouchDB serves one of
  // them again if the winner is deleted.
  bool with_conflicts = false;
  // What a write CouchDB refused was doing, for its error; empty: "writing ID to DATABASE".
  std::string writing;
  // Told before each retry, with a message saying the document changed meanwhile (upload and
  // sync show it as a warning). May be empty.
  std::function<void(const std::string& message)> on_retry;
};

// The caller's decision about the stored document: the document to write (its "_rev" is set
// from the stored one), or std::nullopt to write nothing (it is unchanged, or a dry run). A
// status other than OK ends the write with it.
using WriteDecision = std::optional<rapidjson::Document>;
// `attempt` counts the conflicts so far, from 0.
using DecideWrite =
    std::function<absl::StatusOr<WriteDecision>(const StoredDocument& stored, int attempt)>;

struct WriteResult {
  bool written = false;     // false: the last decision was to write nothing
  bool existed = false;     // a document was stored at the last reading
  std::string stored_rev;   // its rev
  std::string written_rev;  // the rev CouchDB gave the written document (empty if it said none)
  int conflict_retries = 0;
};

// Errors: whatever CouchClient returns (UNAVAILABLE, CANCELLED, ...); HttpError's for an answer
// to the reading or the write that is not a success (404 to reading only with must_exist);
// UNKNOWN for a stored document that is not a JSON object; ABORTED ("ID in DATABASE changed
// concurrently N times while ACTIVITY; gave up without overwriting it") once
// max_conflict_retries conflicts have been retried and the write conflicts again.
absl::StatusOr<WriteResult> WriteWithConflictRetry(CouchClient& couch,
                                                   const ConflictRetriedWrite& write,
                                                   const DecideWrite& decide);

}  // namespace cnp::couchdb
