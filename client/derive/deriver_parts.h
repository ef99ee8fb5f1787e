// What the deriver's files share, and no other: deriver.cc (a stage's run: start, batches,
// checkpoints, progress), deriver_map.cc (a map stage's rows), deriver_reduce.cc (a reduce
// stage's groups) and deriver_writes.cc (writes to the target, the sweep, the errors document).
// Here: a batch of changes, field access on parsed JSON, what a derived document holds, and
// what is recorded for a call refused for its size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "client/derive/changes_answer.h"
#include "client/derive/declaration.h"
#include "client/derive/deriver.h"
#include "rapidjson/document.h"

namespace cnp::derive {

// Derived documents read by id in pages of this many (the sweep).
constexpr int kLookupPage = 1000;
// The most document bytes sent in one Map call or one _bulk_docs request, and taken from a
// continuous feed into one batch: a batch of large documents goes in several parts, each far
// below cnp-server's --max-call-bytes and CouchDB's max_http_request_size (64 MiB by default
// for both), and a single document larger than this goes alone.
constexpr size_t kMaxCallBytes = size_t{16} << 20;
// Documents (or reduce keys) whose call alone ran past --timeout, none of their batch
// answered, before the batch is given up on: the handler is then taken to be too slow for all
// (a dependency gone, --timeout too short), rather than each recorded as a Timeout in turn.
constexpr int kTimeoutsBeforeGivingUp = 3;
// The error type of a change that could not be read, whose document no handler saw.
constexpr char kUnreadableType[] = "UnreadableChange";
// Of a change too long to read whole, what is read to find its seq and id.
constexpr size_t kChangeStartBytes = size_t{64} << 10;
// The error types of a document (or a reduce key) whose call alone passes cnp-server's
// --max-call-bytes: its answer (the rows it yields, a reduce result), or its request.
constexpr char kAnswerTooLargeType[] = "AnswerTooLarge";
constexpr char kRequestTooLargeType[] = "RequestTooLarge";

// cnp-server refuses a call whose answer or request passes its --max-call-bytes, or whose
// documents pass its --max-docs-per-call, with RESOURCE_EXHAUSTED marked with that limit
// (common/call_limit.h; the client library reads the mark from the server's trailer, and marks
// gRPC's own refusal of a request over the limit): fewer documents per call is what helps. Its
// other RESOURCE_EXHAUSTED (every worker busy and the queue full) says to retry later, and
// carries no mark. The client library's own message limit (256 MiB, client::ClientLimitOf) is
// met the same way: smaller calls.
bool OverCallLimit(const absl::Status& status);

struct CallLimitError {
  std::string type, message;
};

// The words for one document or one reduce key whose call alone passed --max-call-bytes.
struct CallLimitWords {
  const char* request;  // "this document is larger"
  const char* answer;   // "the rows this document yields are"
  const char* remedy;   // "make the handler yield less"
};

// What is recorded for a call of one document or key refused for its size; nullopt when
// `status` is no such refusal (a single document never passes --max-docs-per-call, which is at
// least 1).
std::optional<CallLimitError> OneOverCallLimit(const absl::Status& status, const CallLimitWords& words);

// All of the string, U+0000 included: a document id cut at a NUL would name another
// document ("victim\u0000evil" is not "victim").
std::string Text(const rapidjson::Value& object, const char* field);
// The member, or nullptr (`object` not an object, or without it).
const rapidjson::Value* Member(const rapidjson::Value& object, const char* field);

// A sequence as text for ?since=: CouchDB 2+ answers strings, pouchdb-server and CouchDB 1 numbers.
std::string SeqText(const rapidjson::Value& seq);
// The leading number of a sequence ("1234-g1AA..." or "1234"): comparable enough for a backlog.
int64_t SeqNumber(absl::string_view seq);

// A failed call's status with `context` before its message, its code and payloads kept: the
// command tells a cnp-server that did not answer by its payload (client::IsServerUnreachable).
absl::Status InContext(const absl::Status& status, absl::string_view context);

bool IsDesign(absl::string_view id);
// A revision's generation ("3-abc": 3), 0 when it has none.
int64_t Generation(absl::string_view rev);
// startkey and endkey for the ids starting with `prefix`.
std::string RangeQuery(const std::string& prefix);

// The fields of a derived document. An object value becomes the document's fields, except
// those starting with '_' (CouchDB's, which the database refuses or takes as instructions) or
// 'mr_' (the provenance, which must stay true); anything else is mr_value. The fields left out
// are added to `dropped` (but for _id and _rev: a whole source document as the value carries
// them, and the derived document has its own), for Deriver::WarnDropped.
void FillDerived(rapidjson::Value& doc, rapidjson::Document::AllocatorType& a, const rapidjson::Value& key,
                 const rapidjson::Value& value, int64_t version, const std::string& source_type,
                 std::set<std::string>& dropped);
// Whether `doc` is one cnp derive wrote for a stage reading `source`: its mr_source_type is
// `source` and its mr_version a whole number. Nothing else is ever deleted, whatever its id: a
// user's own "people:note" in a target shares the id prefix of the rows derived from people,
// and a sweep once deleted it.
bool IsDerivedFrom(const rapidjson::Value& doc, absl::string_view source);
// {_id, _rev, _deleted, mr_key, ...}: the tombstone keeps the key for the reduce stage.
std::string Tombstone(const rapidjson::Value& existing);
// The tombstone of `existing` (read with conflicts=true) and one for each of its conflicting
// revisions, appended to `writes`: deleting the winner alone made a conflicting revision the
// winner, and a row of a source document that is gone, or of another version, came back
// (replication into the target, or writes with new_edits=false, make them).
void AppendTombstones(const rapidjson::Value& existing, std::vector<std::string>& writes);
// The derived document to write, or "" when `existing` already says the same (its conflicting
// revisions aside).
std::string Desired(rapidjson::Value& desired, rapidjson::Document::AllocatorType& a, rapidjson::Value* existing);

// Checkpoints have a namespace of their own: a checkpoint kept at "cnp-derive:NAME:SOURCE"
// was the lease, status or errors document of a source named lease, status or errors. With no
// ':' in NAME or in a database name, no two of these ids can be equal.
std::string CheckpointId(const std::string& name, const Stage& s);
// Where earlier releases kept the checkpoint, read when CheckpointId's is absent so that an
// upgrade resumes instead of redoing every stage; none for the names whose old id is the
// instance's own document.
std::optional<std::string> OldCheckpointId(const std::string& name, const Stage& s);

struct Deriver::Batch {
  ChangesAnswer changes;
  std::vector<const rapidjson::Value*> results;  // without design documents
  std::vector<absl::string_view> doc_texts;  // each result's document as CouchDB wrote it
  size_t size = 0;                    // changes read, design documents included
  std::string last_seq;
  int64_t pending = -1;               // CouchDB's count of changes after this batch
  // A map stage's rows as the service computed them (MapRows), before CouchDB is asked what
  // it holds: source id -> the derived documents, all allocated in `arena`.
  rapidjson::Document arena{rapidjson::kObjectType};
  std::map<std::string, std::vector<rapidjson::Value>> desired;
  int limit = 0;       // the changes last asked for (a feed's batch: batch_size)
  int next_limit = 0;  // the changes to ask for next
  std::set<std::string> failed;  // the handler raised: that document's rows are left as they are
  std::set<std::string> dropped;  // fields of the values that FillDerived left out
  struct Failure {
    std::string doc_id, type, message;
  };
  std::vector<Failure> failures;
  // Map calls that ran past --timeout and were made again in halves: said on the log by the
  // writing thread (MapRows may run on the prefetching one).
  std::vector<size_t> timed_out_calls;  // each one's number of documents
};

}  // namespace cnp::derive
