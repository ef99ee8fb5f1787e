#include "client/derive/deriver.h"

#include <algorithm>
#include <random>
#include <set>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "client/derive/change_header.h"
#include "client/derive/derived_ids.h"
#include "client/derive/lease.h"
#include "common/call_limit.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "common/couchdb/couch_url.h"
#include "common/couchdb/json.h"
#include "common/printable_text.h"

namespace cnp::derive {
namespace {

using rapidjson::Document;
using rapidjson::Value;

constexpr int kLookupPage = 1000;
// The most document bytes sent in one Map call or one _bulk_docs request, and taken from a
// continuous feed into one batch: a batch of large documents goes in several parts, each far
// below cnp-server's --max-call-bytes and CouchDB's max_http_request_size (64 MiB by default
// for both), and a single document larger than this goes alone.
constexpr size_t kMaxCallBytes = size_t{16} << 20;
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
bool OverCallLimit(const absl::Status& status) {
  return CallLimitOf(status).has_value() || client::ClientLimitOf(status).has_value();
}

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
std::optional<CallLimitError> OneOverCallLimit(const absl::Status& status, const CallLimitWords& words) {
  if (std::optional<CallLimit> own = client::ClientLimitOf(status)) {
    // No flag of cnp-server's helps: this side sends and takes no more than that in one call.
    if (own->kind == CallLimit::Kind::kRequest) {
      return CallLimitError{kRequestTooLargeType,
                            absl::StrCat(words.request, " than cnp derive sends in one call (",
                                         own->limit, " bytes, the client library's limit)")};
    }
    return CallLimitError{kAnswerTooLargeType,
                          absl::StrCat(words.answer, " larger than cnp derive takes in one answer (",
                                       own->limit, " bytes, the client library's limit); ",
                                       words.remedy, " to derive it")};
  }
  std::optional<CallLimit> refused = CallLimitOf(status);
  if (!refused.has_value() || refused->kind == CallLimit::Kind::kDocuments) return std::nullopt;
  const std::string limit = refused->limit > 0 ? absl::StrCat(", ", refused->limit, " bytes") : "";
  if (refused->kind == CallLimit::Kind::kRequest) {
    return CallLimitError{kRequestTooLargeType,
                          absl::StrCat(words.request, " than cnp-server takes in one call (its --max-call-bytes",
                                       limit, "); raise that flag to derive it")};
  }
  return CallLimitError{kAnswerTooLargeType,
                        absl::StrCat(words.answer, " larger than cnp-server's answer limit (its --max-call-bytes",
                                     limit, "); raise that flag, or ", words.remedy, ", to derive it")};
}

// All of the string, U+0000 included: a document id cut at a NUL would name another
// document ("victim\u0000evil" is not "victim").
std::string Text(const Value& object, const char* field) {
  return std::string(couchdb::StringMember(object, field));
}

const Value* Member(const Value& object, const char* field) {
  if (!object.IsObject()) return nullptr;
  auto it = object.FindMember(field);
  return it == object.MemberEnd() ? nullptr : &it->value;
}

// A sequence as text for ?since=: CouchDB 2+ answers strings, pouchdb-server and CouchDB 1 numbers.
std::string SeqText(const Value& seq) {
  if (seq.IsString()) return std::string(couchdb::StringView(seq));
  if (seq.IsNull()) return "0";
  return couchdb::ToJson(seq);
}

// The leading number of a sequence ("1234-g1AA..." or "1234"): comparable enough for a backlog.
int64_t SeqNumber(absl::string_view seq) {
  size_t end = 0;
  while (end < seq.size() && seq[end] >= '0' && seq[end] <= '9') ++end;
  int64_t n = -1;
  if (!absl::SimpleAtoi(seq.substr(0, end), &n)) return -1;
  return n;
}

// A failed call's status with `context` before its message, its code and payloads kept: the
// command tells a cnp-server that did not answer by its payload (client::IsServerUnreachable).
absl::Status InContext(const absl::Status& status, absl::string_view context) {
  absl::Status out(status.code(), absl::StrCat(context, status.message()));
  status.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

bool IsDesign(absl::string_view id) { return absl::StartsWith(id, "_design/"); }

int64_t Generation(absl::string_view rev) {
  int64_t n = 0;
  size_t dash = rev.find('-');
  if (dash == absl::string_view::npos || !absl::SimpleAtoi(rev.substr(0, dash), &n)) return 0;
  return n;
}

std::string RangeQuery(const std::string& prefix) {
  return absl::StrCat("startkey=", QueryString(prefix), "&endkey=",
                      QueryString(absl::StrCat(prefix, "\xef\xbf\xb0")));  // U+FFF0
}

// The fields of a derived document. An object value becomes the document's fields, except
// those starting with '_' (CouchDB's, which the database refuses or takes as instructions) or
// 'mr_' (the provenance, which must stay true); anything else is mr_value. The fields left out
// are added to `dropped` (but for _id and _rev: a whole source document as the value carries
// them, and the derived document has its own), for Deriver::WarnDropped.
void FillDerived(Value& doc, Document::AllocatorType& a, const Value& key, const Value& value,
                 int64_t version, const std::string& source_type, std::set<std::string>& dropped) {
  if (value.IsObject()) {
    for (auto it = value.MemberBegin(); it != value.MemberEnd(); ++it) {
      absl::string_view name(it->name.GetString(), it->name.GetStringLength());
      if (absl::StartsWith(name, "_") || absl::StartsWith(name, "mr_")) {
        if (name != "_id" && name != "_rev") dropped.emplace(name);
        continue;
      }
      doc.AddMember(Value(it->name, a), Value(it->value, a), a);
    }
    doc.AddMember("mr_value", Value(rapidjson::kNullType), a);
  } else {
    doc.AddMember("mr_value", Value(value, a), a);
  }
  doc.AddMember("mr_key", Value(key, a), a);
  doc.AddMember("mr_source_type", couchdb::StringValue(source_type, a), a);
  doc.AddMember("mr_version", version, a);
}

// {_id, _rev, _deleted, mr_key, ...}: the tombstone keeps the key for the reduce stage.
std::string Tombstone(const Value& existing) {
  Document doc(rapidjson::kObjectType);
  auto& a = doc.GetAllocator();
  for (const char* field : {"_id", "_rev", "mr_key", "mr_source_id", "mr_source_type", "mr_version"}) {
    if (const Value* v = Member(existing, field)) doc.AddMember(Value(field, a), Value(*v, a), a);
  }
  doc.AddMember("_deleted", true, a);
  return couchdb::ToJson(doc);
}

// The derived document to write, or "" when `existing` already says the same.
std::string Desired(Value& desired, Document::AllocatorType& a, Value* existing) {
  if (existing != nullptr && existing->IsObject()) {
    std::string rev = Text(*existing, "_rev");
    existing->RemoveMember("_rev");
    if (couchdb::JsonEqual(*existing, desired)) return "";
    desired.AddMember("_rev", couchdb::StringValue(rev, a), a);
  }
  return couchdb::ToJson(desired);
}

}  // namespace

struct Deriver::Batch {
  ChangesAnswer changes;
  std::vector<const Value*> results;  // without design documents
  std::vector<absl::string_view> doc_texts;  // each result's document as CouchDB wrote it
  size_t size = 0;                    // changes read, design documents included
  std::string last_seq;
  int64_t pending = -1;               // CouchDB's count of changes after this batch
  // A map stage's rows as the service computed them (MapRows), before CouchDB is asked what
  // it holds: source id -> the derived documents, all allocated in `arena`.
  Document arena{rapidjson::kObjectType};
  std::map<std::string, std::vector<Value>> desired;
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

Deriver::Deriver(Declaration declaration, CouchDb& couch, client::Client& cnp,
                 DeriverOptions options, std::ostream& log,
                 std::function<absl::StatusOr<bool>()> may_write, CouchDb* prefetch)
    : declaration_(std::move(declaration)),
      couch_(couch),
      cnp_(cnp),
      options_(options),
      log_(log),
      may_write_(std::move(may_write)),
      prefetch_(prefetch) {
  home_ = declaration_.stages.front().target;
  for (const Stage& s : declaration_.stages) home_ = std::min(home_, s.target);
  progress_.resize(declaration_.stages.size());
  checkpoints_.resize(declaration_.stages.size());
  last_report_.assign(declaration_.stages.size(), absl::InfinitePast());
  reported_processed_.assign(declaration_.stages.size(), 0);
  read_limits_.assign(declaration_.stages.size(), options_.batch_size);
  sources_read_.assign(declaration_.stages.size(), false);
  warned_dropped_.assign(declaration_.stages.size(), {});
  for (size_t i = 0; i < declaration_.stages.size(); ++i) {
    const Stage& map = declaration_.stages[i];
    if (map.reduce) continue;
    for (const Stage& r : declaration_.stages) {
      if (r.reduce && r.with_sources && r.source == map.target) sources_read_[i] = true;
    }
  }
}

Deriver::~Deriver() {
  for (auto& feed : feeds_) {
    if (feed) feed->RequestStop();  // all at once, then each joined
  }
  // However the run ends, the errors it left out of the log are said.
  LogErrorsLeftOut(/*final=*/true);
}

// Checkpoints have a namespace of their own: a checkpoint kept at "cnp-derive:NAME:SOURCE"
// was the lease, status or errors document of a source named lease, status or errors. With no
// ':' in NAME or in a database name, no two of these ids can be equal.
static std::string CheckpointId(const std::string& name, const Stage& s) {
  return absl::StrCat("cnp-derive:", name, ":source:", s.source);
}

// Where earlier releases kept the checkpoint, read when CheckpointId's is absent so that an
// upgrade resumes instead of redoing every stage; none for the names whose old id is the
// instance's own document.
static std::optional<std::string> OldCheckpointId(const std::string& name, const Stage& s) {
  if (s.source == "lease" || s.source == "status" || s.source == "errors") return std::nullopt;
  return absl::StrCat("cnp-derive:", name, ":", s.source);
}

// Each source database holds a marker of its own, so that a checkpoint taken from one that was
// deleted and created again under its name (a new database, whose sequences start over) is
// not resumed from: CouchDB 3's GET /db answers no uuid, and instance_start_time is "0".
// _local documents are not in _changes or _all_docs, so the marker is no document of the
// source to its readers or to the map handlers.
constexpr char kSourceMarkerId[] = "cnp-derive-source";

absl::StatusOr<std::string> Deriver::SourceMarker(const std::string& source) {
  if (auto known = source_markers_.find(source); known != source_markers_.end()) return known->second.first;
  const std::string path = LocalDocPath(source, kSourceMarkerId);
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<std::optional<Document>> doc =
        couch_.GetIfExists(path, absl::StrCat("reading the marker _local/", kSourceMarkerId, " of ", source));
    if (!doc.ok()) return NoMarker(source, doc.status());
    if (doc->has_value()) {
      std::string id = Text(**doc, "id");
      source_markers_[source] = {id, false};
      return id;
    }
    std::random_device random;
    const std::string id = absl::StrFormat("%08x%08x%08x%08x", random(), random(), random(), random());
    Document marker(rapidjson::kObjectType);
    auto& a = marker.GetAllocator();
    marker.AddMember("id", couchdb::StringValue(id, a), a);
    marker.AddMember("created_at_ms", absl::ToUnixMillis(absl::Now()), a);
    absl::StatusOr<Document> written = FencedWrite("PUT", path, couchdb::ToJson(marker),
                                                   absl::StrCat("writing the marker _local/", kSourceMarkerId,
                                                                " of ", source));
    if (written.ok()) {
      source_markers_[source] = {id, true};
      return id;
    }
    // Another instance (of another name) wrote it first: its id is the one.
    if (absl::IsAborted(written.status()) && attempt == 0) continue;
    return NoMarker(source, written.status());
  }
}

absl::StatusOr<std::string> Deriver::NoMarker(const std::string& source, const absl::Status& why) {
  // CouchDB out of reach, or the lease lost: the run's own errors. Anything else (401 or 403 of
  // read-only credentials, a proxy that refuses _local) costs the marker, not the run.
  if (IsLeaseLost(why) || absl::IsUnavailable(why) || absl::IsDeadlineExceeded(why)) return why;
  log_ << "cnp derive: " << source << ": warning: no marker _local/" << kSourceMarkerId << " in " << source << " ("
       << Printable(couchdb::RedactCredentials(why.message()))
       << "), so a deletion and re-creation of the database is noticed only by its sequence going back; "
          "give the credentials write access to "
       << source << " to have it noticed always\n";
  source_markers_[source] = {"", false};
  return std::string();
}

std::optional<std::string> Deriver::Recreated(size_t i, const Document& d, const std::string& marker,
                                              bool marker_written) {
  const Stage& s = declaration_.stages[i];
  const std::string recorded = Text(d, "source_id");
  if (!recorded.empty() && !marker.empty() && recorded != marker) {
    return absl::StrCat(marker_written ? absl::StrCat("its marker _local/", kSourceMarkerId, " is gone")
                                       : absl::StrCat("its marker _local/", kSourceMarkerId, " is another's"),
                        ": the checkpoint was taken from database ", recorded, ", not ", marker);
  }
  if (!recorded.empty() && !marker.empty()) return std::nullopt;  // the same database
  // No marker to go by (a checkpoint of an earlier release, or a source that cannot be
  // written): a sequence below the checkpoint's is a new database's.
  const Value* seq = Member(d, "seq");
  const int64_t checkpointed = seq ? SeqNumber(SeqText(*seq)) : -1;
  if (checkpointed <= 0) return std::nullopt;
  absl::StatusOr<Document> info = couch_.Get(DbPath(s.source), absl::StrCat("reading database ", s.source));
  if (!info.ok()) return std::nullopt;  // asked again by the reads to come, which fail then
  const Value* update_seq = Member(*info, "update_seq");
  const int64_t now = update_seq ? SeqNumber(SeqText(*update_seq)) : -1;
  if (now < 0 || now >= checkpointed) return std::nullopt;
  return absl::StrCat("its sequence ", now, " is below the checkpoint's ", checkpointed);
}

absl::Status Deriver::WarnUndeclaredRows(const std::string& target, const std::set<std::string>& sources) {
  // Derived ids are "<source>:<hex>..." and a database name starts with a lowercase letter:
  // from "a" (past _design/ documents), one prefix after another; a bounded look.
  std::string start = "a";
  for (int asked = 0; asked < 100; ++asked) {
    absl::StatusOr<Document> page =
        couch_.Get(absl::StrCat(DbPath(target), "/_all_docs?limit=1&startkey=", QueryString(start), "&include_docs=true"),
                   absl::StrCat("reading derived documents of ", target));
    if (!page.ok()) return page.status();
    const Value* rows = Member(*page, "rows");
    if (rows == nullptr || !rows->IsArray() || rows->Empty()) return absl::OkStatus();
    const Value& row = (*rows)[0];
    const std::string id = Text(row, "id");
    const size_t colon = id.find(':');
    if (colon == std::string::npos) {
      start = id;
      start.push_back('\0');
      continue;
    }
    const std::string prefix = id.substr(0, colon);
    start = absl::StrCat(prefix, ":\xef\xbf\xb0");
    const Value* doc = Member(row, "doc");
    // Only documents cnp derive wrote: their mr_source_type is the prefix.
    if (doc == nullptr || Text(*doc, "mr_source_type") != prefix || sources.count(prefix) > 0) continue;
    log_ << "cnp derive: " << target << ": warning: it holds documents derived from " << prefix
         << ", which the declaration no longer names as a source of " << target
         << ": they stay, and a reduce or join over " << target << " still counts them; to remove them, "
         << "delete the documents of " << target << " whose ids start with \"" << prefix
         << ":\" (and _local/cnp-derive:" << declaration_.name << ":source:" << prefix
         << "), or declare the source again\n";
  }
  return absl::OkStatus();
}

absl::Status Deriver::Start() {
  std::set<std::string> targets, sources;
  for (const Stage& s : declaration_.stages) {
    targets.insert(s.target);
    if (!s.reduce) sources.insert(s.source);
  }
  for (const std::string& source : sources) {
    absl::StatusOr<std::optional<Document>> info =
        couch_.GetIfExists(DbPath(source), absl::StrCat("reading source database ", source));
    if (!info.ok()) return info.status();
    if (!info->has_value()) {
      return absl::NotFoundError(absl::StrCat("source database ", source, " does not exist at ",
                                              couch_.base_url()));
    }
  }
  for (const std::string& target : targets) {
    if (absl::Status s = couch_.EnsureDatabase(target); !s.ok()) return s;
    std::set<std::string> declared;
    for (const Stage& s : declaration_.stages) {
      if (s.target == target) declared.insert(s.source);
    }
    if (absl::Status s = WarnUndeclaredRows(target, declared); !s.ok()) return s;
  }
  for (size_t i = 0; i < declaration_.stages.size(); ++i) {
    const Stage& s = declaration_.stages[i];
    if (s.reduce) {
      // Reduce stages read a key's rows of the map target with _find; CouchDB needs an index
      // on mr_key for that not to scan the whole database.
      absl::StatusOr<Document> index = couch_.Post(
          absl::StrCat(DbPath(s.source), "/_index"),
          R"({"index":{"fields":["mr_key"]},"ddoc":"cnp-derive-mr-key","name":"mr-key","type":"json"})",
          absl::StrCat("creating the mr_key index of ", s.source));
      if (!index.ok()) return index.status();
    }
    absl::StatusOr<std::optional<Document>> doc = couch_.GetIfExists(
        LocalDocPath(s.target, CheckpointId(declaration_.name, s)), "reading a checkpoint");
    if (!doc.ok()) return doc.status();
    StageProgress& p = progress_[i];
    Checkpoint& c = checkpoints_[i];
    absl::StatusOr<std::string> marker = SourceMarker(s.source);
    if (!marker.ok()) return marker.status();
    const bool marker_written = source_markers_[s.source].second;
    std::optional<std::string> old_id = OldCheckpointId(declaration_.name, s);
    if (!doc->has_value() && old_id.has_value()) {
      doc = couch_.GetIfExists(LocalDocPath(s.target, *old_id), "reading a checkpoint at its earlier id");
      if (!doc.ok()) return doc.status();
      if (doc->has_value()) {
        c.old_rev = Text(**doc, "_rev");
        log_ << "cnp derive: " << s.source << " -> " << s.target << ": resuming from the checkpoint _local/"
             << *old_id << " of an earlier release; it moves to _local/" << CheckpointId(declaration_.name, s)
             << "\n";
      }
    }
    if (!doc->has_value()) {
      p.seq = "0";
      // Derived documents left by an earlier run that lost its checkpoint are swept once
      // caught up; an empty prefix (the usual first run) needs no sweep.
      std::string prefix = absl::StrCat(s.source, ":");
      absl::StatusOr<Document> any = couch_.Get(
          absl::StrCat(DbPath(s.target), "/_all_docs?limit=1&", RangeQuery(prefix)),
          absl::StrCat("reading derived documents of ", s.target));
      if (!any.ok()) return any.status();
      const Value* rows = Member(*any, "rows");
      c.sweep = rows != nullptr && rows->IsArray() && !rows->Empty();
      c.fresh = !c.sweep;
    } else {
      const Document& d = **doc;
      if (c.old_rev.empty()) c.rev = Text(d, "_rev");  // the new id's is written without one
      c.source_id = Text(d, "source_id");
      const Value* version = Member(d, "version");
      const Value* seq = Member(d, "seq");
      const Value* sweep = Member(d, "sweep");
      int64_t old_version = version && version->IsInt64() ? version->GetInt64() : -1;
      if (std::optional<std::string> why = Recreated(i, d, *marker, marker_written); why.has_value()) {
        // What was derived from the earlier database is of documents it held: none of it is
        // known to hold now, and a new database's sequences start below the checkpoint. Its
        // rows go first (all versions; a reduce stage after it sees their keys go), then the
        // stage runs over the source from the start, as a first synchronization.
        log_ << "cnp derive: " << s.source << " -> " << s.target << ": " << s.source
             << " was deleted and created again since the checkpoint (" << *why << "): removing what was "
             << "derived from the earlier database and re-running over " << s.source << " from the start\n";
        if (absl::StatusOr<int64_t> refused = Sweep(i, /*every_version=*/true); !refused.ok()) {
          return refused.status();
        }
        // Rows whose removal the target refused stay, each recorded here: no later sweep looks
        // for rows of the earlier database.
        if (absl::Status st = FlushErrors(); !st.ok()) return st;
        p.seq = "0";
        p.rerun = true;
        c.sweep = false;
        c.fresh = true;
        if (!marker->empty()) c.source_id = *marker;
        if (absl::Status st = SaveCheckpoint(i); !st.ok()) return st;
        p.seq_before = p.seq;
        continue;
      }
      if (old_version != s.version) {
        log_ << "cnp derive: " << s.source << " -> " << s.target << ": version " << old_version
             << " -> " << s.version << ", re-running over " << s.source
             << " from the start; documents of other versions will be removed\n";
        p.seq = "0";
        c.sweep = true;
        p.rerun = true;
      } else {
        p.seq = seq ? SeqText(*seq) : "0";
        c.sweep = sweep && sweep->IsBool() && sweep->GetBool();
        // qvarn-mr's rule: the version, not the handler, says when to re-run. A handler or
        // type changed without a bump goes on from the checkpoint, so say what that leaves.
        const std::string old_handler = Text(d, "handler");
        const std::string old_type = Text(d, "type");
        const std::string type = s.reduce ? "reduce" : "map";
        const bool handler_changed = !old_handler.empty() && old_handler != s.handler;
        const bool type_changed = !old_type.empty() && old_type != type;
        if (handler_changed || type_changed) {
          log_ << "cnp derive: " << s.source << " -> " << s.target << ": warning: the "
               << (handler_changed ? absl::StrCat("handler changed (", Printable(old_handler), " -> ",
                                                  Printable(s.handler), ")")
                                   : "")
               << (handler_changed && type_changed ? " and the " : "")
               << (type_changed ? absl::StrCat("type changed (", old_type, " -> ", type, ")") : "")
               << " but the version is still " << s.version
               << ": going on from the checkpoint, so the documents derived so far stay as the "
                  "old handler made them; bump the version to re-run over "
               << s.source << " from the start\n";
        }
      }
    }
    const bool adopt = doc->has_value() && c.source_id.empty() && !marker->empty();
    if (!marker->empty()) c.source_id = *marker;
    p.seq_before = p.seq;
    // A checkpoint that names no source (an earlier release's) names it from now on, so that a
    // re-creation is noticed by the marker, not only by a sequence that went back.
    if (adopt) {
      if (absl::Status st = SaveCheckpoint(i); !st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Deriver::CatchUp() {
  int64_t total = 0;
  for (size_t i = 0; i < declaration_.stages.size(); ++i) {
    // A stage fed by a continuous feed takes what is queued, not what keeps arriving: a source
    // that never stops changing must not starve the stages after it.
    const bool fed = i < feeds_.size() && feeds_[i] != nullptr;
    if (!fed && !declaration_.stages[i].reduce && prefetch_ != nullptr) {
      absl::StatusOr<int64_t> n = RunPipelined(i);
      if (!n.ok()) return n.status();
      total += *n;
    } else {
      for (int batches = 0; !fed || batches < 4; ++batches) {
        absl::StatusOr<int64_t> n = RunBatch(i);
        if (!n.ok()) return n.status();
        if (*n == 0) break;
        total += *n;
      }
    }
    Report(i, /*force=*/true);
  }
  return total;
}

absl::StatusOr<std::unique_ptr<Deriver::Batch>> Deriver::ReadBatch(size_t i, const std::string& since, int limit,
                                                                   CouchDb& couch) const {
  const Stage& s = declaration_.stages[i];
  auto batch = std::make_unique<Batch>();
  batch->limit = limit;
  batch->next_limit = limit;
  if (i < feeds_.size() && feeds_[i] != nullptr) {
    if (feeds_[i]->queued() == 0) {
      // What was queued before a refusal is handled first; then the refusal ends the run.
      if (absl::Status failure = feeds_[i]->failure(); !failure.ok()) return failure;
    }
    batch->limit = options_.batch_size;
    batch->changes = feeds_[i]->Take(static_cast<size_t>(options_.batch_size), kMaxCallBytes);
  } else {
    absl::StatusOr<ChangesAnswer> changes = ReadChanges(i, since, batch->next_limit, couch, batch->limit);
    if (!changes.ok()) return changes.status();
    batch->changes = *std::move(changes);
  }
  const Value* results = Member(batch->changes.json, "results");
  const Value* last_seq = Member(batch->changes.json, "last_seq");
  if (results == nullptr || !results->IsArray() || last_seq == nullptr) {
    return absl::UnknownError(absl::StrCat("the _changes answer of ", s.source, " has no results or last_seq"));
  }
  // Changes read from a position that they do not move on from would be read again from it,
  // and again (a run with --once never ended): CouchDB's last_seq is past every change it gives.
  const bool from_feed = i < feeds_.size() && feeds_[i] != nullptr;
  if (!from_feed && !results->Empty() && SeqText(*last_seq) == since) {
    return absl::UnknownError(absl::StrCat(
        "the _changes answer of ", s.source, " gave ", results->Size(),
        " change(s) but its last_seq is the position they were read from (",
        Printable(since.substr(0, 40)), "): reading on would read them again forever; is the "
        "URL a CouchDB?"));
  }
  if (const Value* pending = Member(batch->changes.json, "pending"); pending && pending->IsInt64()) {
    batch->pending = pending->GetInt64();
  }
  batch->size = results->Size();
  batch->last_seq = SeqText(*last_seq);
  // A document listed more than once (a continuous feed brings a create and an update of it
  // in one batch; a clustered CouchDB may list a document twice) counts once, as its last
  // change: the rows of an earlier version would be kept beside the last one's, and two writes
  // of one row with one _rev conflict.
  std::set<std::string> later;  // ids of changes after the one looked at
  std::vector<bool> superseded(results->Size(), false);
  for (rapidjson::SizeType r = results->Size(); r-- > 0;) {
    superseded[r] = !later.insert(Text((*results)[r], "id")).second;
  }
  for (rapidjson::SizeType r = 0; r < results->Size(); ++r) {
    const Value& change = (*results)[r];
    std::string id = Text(change, "id");
    if (IsDesign(id) || superseded[r]) continue;
    if (Member(change, kUnreadableMember) != nullptr) {
      // Read neither now nor ever (the same change would fail again): recorded and passed.
      batch->failures.push_back({id, kUnreadableType,
                                 absl::StrCat("cnp derive could not read this change, so its document was not "
                                              "passed to the handler: ", Text(change, kUnreadableMember))});
      batch->failed.insert(id);
      continue;
    }
    // Asked with include_docs=true, CouchDB gives every change that is not a deletion its
    // document. One without it (a proxy, a server that is not CouchDB) would be taken for a
    // deletion below, and the document's rows removed until it next changes.
    const Value* deleted = Member(change, "deleted");
    const Value* doc = Member(change, "doc");
    if (!(deleted && deleted->IsBool() && deleted->GetBool()) &&
        (doc == nullptr || !doc->IsObject())) {
      return absl::DataLossError(absl::StrCat(
          "the change of ", Printable(id), " in ", declaration_.stages[i].source,
          "/_changes has no document, though it is not a deletion and the feed was asked for "
          "documents (include_docs=true): nothing of this batch is written or checkpointed; "
          "is the URL a CouchDB, or a proxy that rewrites its answers?"));
    }
    batch->results.push_back(&change);
    batch->doc_texts.push_back(batch->changes.DocText(r));
  }
  return batch;
}

absl::StatusOr<ChangesAnswer> Deriver::ReadChanges(size_t i, const std::string& since, int& limit,
                                              CouchDb& couch, int& asked) const {
  const Stage& s = declaration_.stages[i];
  const std::string what = absl::StrCat("reading the changes of ", s.source);
  const size_t max_bytes = static_cast<size_t>(std::max<int64_t>(0, couch.max_response_bytes()));
  while (true) {
    asked = limit;
    absl::StatusOr<std::string> body = couch.GetBody(ChangesPath(i, since, limit), what);
    std::string why;
    if (body.ok()) {
      const size_t size = body->size();
      absl::StatusOr<ChangesAnswer> changes = ParseChanges(*body);
      if (changes.ok()) {
        // Back towards the full batch size once an answer is well within the limit: a few large
        // documents must not make every later batch small.
        if (limit < options_.batch_size && size <= max_bytes / 4) {
          limit = std::min(options_.batch_size, limit * 2);
        }
        return changes;
      }
      why = std::string(changes.status().message());
    } else if (absl::IsResourceExhausted(body.status())) {
      why = absl::StrCat("the change with its document is longer than ", max_bytes,
                         " bytes, or holds more JSON values than one per 16 of them "
                         "(--max-couchdb-response-bytes)");
    } else {
      return body.status();
    }
    if (limit > 1) {
      limit /= 2;
      continue;
    }
    // One change, and it cannot be read: where it is and whose it is come before its document.
    absl::StatusOr<std::string> start =
        body.ok() ? std::move(body) : couch.GetStart(ChangesPath(i, since, 1), kChangeStartBytes, what);
    if (!start.ok()) return start.status();
    if (!body.ok() && start->size() < kChangeStartBytes) {
      // The whole answer this time: the change moved on (its document changed again since the
      // first read), and what comes first now is another change, to be read, not passed.
      if (absl::StatusOr<ChangesAnswer> changes = ParseChanges(*start); changes.ok()) return changes;
    }
    std::optional<ChangeHeader> header = ScanChangeHeader(*start, ChangeText::kFirstResult);
    if (!header.has_value()) {
      return absl::UnknownError(absl::StrCat(what, " at ", couch.base_url(), ": the change after seq ", since,
                                             " cannot be read (", why, ") and its seq and id cannot be found"));
    }
    std::string alone =
        absl::StrCat("{\"results\":[", UnreadableChangeJson(*header, why), "],\"last_seq\":", header->seq_json, "}");
    absl::StatusOr<ChangesAnswer> changes = ParseChanges(alone);
    limit = std::min(options_.batch_size, 2);
    return changes;
  }
}

absl::StatusOr<bool> Deriver::CaughtUp(size_t i, const Batch& batch) {
  StageProgress& p = progress_[i];
  if (i < feeds_.size() && feeds_[i] != nullptr) {
    p.backlog = static_cast<int64_t>(feeds_[i]->queued());
  } else if (batch.pending >= 0) {
    p.backlog = batch.pending;
  }
  if (batch.size > 0) return false;
  p.backlog = 0;
  // The initial synchronization is over: from now on a document at its first revision may
  // come after rows of it were written (a document listed twice), so rows are looked up.
  checkpoints_[i].fresh = false;
  Checkpoint& c = checkpoints_[i];
  const bool swept = c.sweep;
  if (swept) {
    absl::StatusOr<int64_t> refused = Sweep(i);
    if (!refused.ok()) return refused.status();
    c.sweep = false;
    // A row whose removal the target refused (its validate_doc_update, say) stays: its error is
    // recorded now (no batch may follow to do it), and the next run sweeps again.
    c.sweep_next_run = *refused > 0;
    if (absl::Status st = FlushErrors(); !st.ok()) return st;
  }
  // A checkpoint still at its earlier id moves now: a quiet source may bring no batch for long.
  if (swept || !c.old_rev.empty()) {
    if (absl::Status st = SaveCheckpoint(i); !st.ok()) return st;
  }
  return true;
}

absl::Status Deriver::Complete(size_t i, const Batch& batch, int64_t written) {
  StageProgress& p = progress_[i];
  p.written += written;
  p.processed += static_cast<int64_t>(batch.size);
  p.seq = batch.last_seq;
  // The errors first: a checkpoint past a document whose error is not yet recorded would lose
  // it if the run stopped in between (recorded twice, if it stops after the errors, is better).
  if (absl::Status st = FlushErrors(); !st.ok()) return st;
  if (absl::Status st = SaveCheckpoint(i); !st.ok()) return st;
  Report(i, false);
  if (!options_.status_holder.empty() && absl::Now() - status_written_ >= options_.status_every) {
    if (absl::Status st = WriteStatus(options_.status_holder); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Deriver::RunBatch(size_t i) {
  const Stage& s = declaration_.stages[i];
  StageProgress& p = progress_[i];
  absl::StatusOr<bool> allowed = may_write_();
  if (!allowed.ok()) return allowed.status();
  if (!*allowed) return LeaseLostError("the lease was lost");
  const absl::Time started = absl::Now();
  p.busy_since = started;
  absl::StatusOr<std::unique_ptr<Batch>> batch = ReadBatch(i, p.seq, read_limits_[i], couch_);
  // However the batch ends, its time is the stage's.
  absl::Cleanup busy = [&p, started] {
    p.busy += absl::Now() - started;
    p.busy_since = absl::InfinitePast();
  };
  if (!batch.ok()) return batch.status();
  read_limits_[i] = (*batch)->next_limit;
  absl::StatusOr<bool> done = CaughtUp(i, **batch);
  if (!done.ok()) return done.status();
  if (*done) return 0;
  absl::StatusOr<int64_t> written;
  if (s.reduce) {
    written = ReduceBatch(i, **batch);
  } else if (absl::Status mapped = MapRows(i, **batch); !mapped.ok()) {
    written = mapped;
  } else {
    written = WriteMapRows(i, **batch);
  }
  if (!written.ok()) return written.status();
  if (absl::Status st = Complete(i, **batch, *written); !st.ok()) return st;
  return static_cast<int64_t>((*batch)->size);
}

absl::StatusOr<int64_t> Deriver::RunPipelined(size_t i) {
  // Three things overlap: the next batch is read (on the second connection) and mapped by the
  // service on a helper thread while this one's rows are looked up, written and checkpointed
  // here. Writes stay in order: a batch is written only after the one before it, so a
  // document that changed again later is seen by its second batch as the first one left it.
  StageProgress& p = progress_[i];
  auto read_and_map = [this, i](std::string since, int limit, CouchDb* couch) -> absl::StatusOr<std::unique_ptr<Batch>> {
    absl::StatusOr<std::unique_ptr<Batch>> batch = ReadBatch(i, since, limit, *couch);
    if (batch.ok() && (*batch)->size > 0) {
      if (absl::Status mapped = MapRows(i, **batch); !mapped.ok()) return mapped;
    }
    return batch;
  };
  const absl::Time started = absl::Now();
  p.busy_since = started;
  int64_t total = 0;
  absl::StatusOr<std::unique_ptr<Batch>> current = read_and_map(p.seq, read_limits_[i], &couch_);
  absl::Status failed;
  while (true) {
    if (!current.ok()) {
      failed = current.status();
      break;
    }
    Batch& batch = **current;
    read_limits_[i] = batch.next_limit;
    absl::StatusOr<bool> done = CaughtUp(i, batch);
    if (!done.ok() || *done) {
      failed = done.status();
      break;
    }
    absl::StatusOr<bool> allowed = may_write_();
    if (!allowed.ok() || !*allowed) {
      failed = allowed.ok() ? LeaseLostError("the lease was lost") : allowed.status();
      break;
    }
    std::future<absl::StatusOr<std::unique_ptr<Batch>>> next;
    if (batch.size >= static_cast<size_t>(batch.limit)) {
      next = std::async(std::launch::async, read_and_map, batch.last_seq, batch.next_limit, prefetch_);
    }
    absl::StatusOr<int64_t> written = WriteMapRows(i, batch);
    absl::Status completed = written.ok() ? Complete(i, batch, *written) : written.status();
    if (!completed.ok()) {
      if (next.valid()) next.wait();  // it uses this object; let it finish first
      failed = completed;
      break;
    }
    total += static_cast<int64_t>(batch.size);
    current = next.valid() ? next.get() : read_and_map(p.seq, read_limits_[i], &couch_);
  }
  p.busy += absl::Now() - started;
  p.busy_since = absl::InfinitePast();
  if (!failed.ok()) return failed;
  return total;
}

std::string Deriver::ChangesPath(size_t i, const std::string& since, int limit) const {
  // seq_interval as the limit: a change read alone (one that cannot be read in a batch) comes
  // with its own seq, which is where the stage goes on after it.
  return absl::StrCat(DbPath(declaration_.stages[i].source), "/_changes?since=",
                      couchdb::CouchClient::EscapeSegment(since), "&limit=", limit,
                      "&include_docs=true&seq_interval=", limit, "&style=all_docs");
}

absl::Status Deriver::MapRows(size_t i, Batch& batch) const {
  const Stage& s = declaration_.stages[i];
  std::vector<std::string> docs;
  std::vector<const Value*> mapped;  // the changes whose documents were mapped
  for (size_t r = 0; r < batch.results.size(); ++r) {
    const Value* change = batch.results[r];
    const Value* deleted = Member(*change, "deleted");
    const Value* doc = Member(*change, "doc");
    if ((deleted && deleted->IsBool() && deleted->GetBool()) || doc == nullptr || !doc->IsObject()) continue;
    // As CouchDB wrote it: the worker reads every number of it exactly (an integer of 401
    // digits is the handler's int), which no re-serialised tree would promise.
    docs.emplace_back(batch.doc_texts[r]);
    mapped.push_back(change);
  }
  if (docs.empty()) return absl::OkStatus();
  MapTally tally;
  absl::StatusOr<std::vector<v1::MapResult>> results = MapInParts(s, docs, tally);
  batch.timed_out_calls = std::move(tally.halved);
  if (!results.ok()) return results.status();
  // The rows each document yields now, as documents to write, all in one arena.
  auto& ra = batch.arena.GetAllocator();
  for (size_t d = 0; d < mapped.size(); ++d) {
    std::string id = Text(*mapped[d], "id");
    const v1::MapResult& result = (*results)[d];
    if (result.errors_size() > 0) {
      for (const v1::FunctionError& e : result.errors()) batch.failures.push_back({id, e.type(), e.message()});
      batch.failed.insert(id);
      continue;
    }
    // The service's own output: CouchDB's map_doc reply, [[[key, value], ...]], its numbers
    // kept exactly (a key of 401 digits is written with its 401 digits).
    absl::StatusOr<Document> rows = couchdb::ParseJsonExact(result.rows());
    if (!rows.ok()) {
      // A key or value JSON can write but not carry as UTF-8: a str holding a lone surrogate
      // (backslash-u d800), which Python allows and CouchDB would refuse. That document's error, as
      // if its handler had raised; the others go on.
      batch.failures.push_back(
          {id, "UnwritableRow",
           absl::StrCat("the handler's rows for this document cannot be stored as JSON (",
                        rows.status().message(),
                        "; a str holding a lone surrogate such as '\\ud800' is the usual cause)")});
      batch.failed.insert(id);
      continue;
    }
    if (!rows->IsArray() || rows->Size() != 1 || !(*rows)[0].IsArray()) {
      return absl::InternalError("the service answered map rows that are not [[[key, value], ...]]");
    }
    // A reduce stage that reads the rows' source documents (a join) re-reduces only the keys
    // whose rows changed: with the source's revision in each row, a change of the source
    // document changes its rows even when its keys and values stay, and the reduce stage sees
    // the new fields.
    const std::string source_rev = sources_read_[i] ? Text(*Member(*mapped[d], "doc"), "_rev") : "";
    std::vector<Value>& out = batch.desired[id];
    size_t n = 0;
    for (const Value& pair : (*rows)[0].GetArray()) {
      if (!pair.IsArray() || pair.Size() != 2) continue;
      Value doc(rapidjson::kObjectType);
      std::string row_id = MapRowId(s.source, id, couchdb::ToJson(pair[0]), n++);
      doc.AddMember("_id", couchdb::StringValue(row_id, ra), ra);
      doc.AddMember("mr_source_id", couchdb::StringValue(id, ra), ra);
      if (!source_rev.empty()) doc.AddMember("mr_source_rev", couchdb::StringValue(source_rev, ra), ra);
      FillDerived(doc, ra, pair[0], pair[1], s.version, s.source, batch.dropped);
      out.push_back(std::move(doc));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::MapResult>> Deriver::MapInParts(const Stage& s,
                                                              const std::vector<std::string>& docs,
                                                              MapTally& tally) const {
  std::vector<v1::MapResult> results;
  results.reserve(docs.size());
  for (size_t first = 0; first < docs.size();) {
    size_t end = first, bytes = 0;
    while (end < docs.size() && (end == first || bytes + docs[end].size() <= kMaxCallBytes)) bytes += docs[end++].size();
    if (absl::Status st = MapSplitting(s, docs, first, end, results, tally); !st.ok()) return st;
    first = end;
  }
  if (tally.timed_out > 0 && tally.answered == 0) {
    return absl::DeadlineExceededError(absl::StrCat(
        "map handler ", s.handler, " (", s.source, " -> ", s.target, "): no call for this batch of ", docs.size(),
        " document(s) was answered within --timeout (", absl::FormatDuration(options_.rpc_timeout),
        "), not even for one document alone: cnp-server may be overloaded, or the handler too slow for every "
        "document; nothing was recorded, and a later run goes on from the checkpoint"));
  }
  return results;
}

absl::Status Deriver::MapSplitting(const Stage& s, const std::vector<std::string>& docs, size_t first, size_t end,
                                   std::vector<v1::MapResult>& results, MapTally& tally) const {
  std::vector<std::string> part(docs.begin() + static_cast<std::ptrdiff_t>(first),
                                docs.begin() + static_cast<std::ptrdiff_t>(end));
  absl::StatusOr<v1::MapResponse> response = cnp_.Map({s.handler}, part, options_.rpc_timeout);
  const bool timed_out = absl::IsDeadlineExceeded(response.status());
  if (timed_out && end - first > 1) tally.halved.push_back(part.size());
  if (timed_out && end - first == 1) {
    // Its own error, if the batch shows that the service answers (MapInParts).
    ++tally.timed_out;
    v1::MapResult& failed = results.emplace_back();
    failed.set_rows("[[]]");
    v1::FunctionError& e = *failed.add_errors();
    e.set_type("Timeout");
    e.set_message(absl::StrCat("the handler ran past --timeout (", absl::FormatDuration(options_.rpc_timeout),
                               ") on this document alone, so its rows were left as they are"));
    return absl::OkStatus();
  }
  if (OverCallLimit(response.status()) || timed_out) {
    if (end - first > 1) {
      const size_t middle = first + (end - first) / 2;
      if (absl::Status st = MapSplitting(s, docs, first, middle, results, tally); !st.ok()) return st;
      return MapSplitting(s, docs, middle, end, results, tally);
    }
    // That document's error, as if its handler had raised: recorded, its rows left as they
    // are, and the batch (and the checkpoint) go past it.
    if (std::optional<CallLimitError> error = OneOverCallLimit(
            response.status(), {"this document is larger", "the rows this document yields are", "make the handler yield less"})) {
      v1::MapResult& failed = results.emplace_back();
      failed.set_rows("[[]]");
      v1::FunctionError& e = *failed.add_errors();
      e.set_type(error->type);
      e.set_message(error->message);
      return absl::OkStatus();
    }
  }
  if (!response.ok()) {
    return InContext(response.status(), absl::StrCat("map handler ", s.handler, " (", s.source, " -> ", s.target, "): "));
  }
  if (response->results_size() != static_cast<int>(part.size())) {
    return absl::InternalError("the service answered a different number of map results");
  }
  ++tally.answered;
  for (v1::MapResult& result : *response->mutable_results()) results.push_back(std::move(result));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Deriver::WriteMapRows(size_t i, Batch& batch) {
  const Stage& s = declaration_.stages[i];
  for (size_t documents : batch.timed_out_calls) {
    log_ << "cnp derive: " << s.source << " -> " << s.target << ": a Map call of " << documents
         << " documents ran past --timeout (" << absl::FormatDuration(options_.rpc_timeout)
         << "); made again in halves to find the document(s) the handler is too slow for\n";
  }
  for (const Batch::Failure& f : batch.failures) RecordError(s, f.doc_id, f.type, f.message);
  WarnDropped(i, batch.dropped);
  auto& ra = batch.arena.GetAllocator();
  std::map<std::string, std::vector<Value>>& desired = batch.desired;
  const std::set<std::string>& failed = batch.failed;
  const bool fresh = checkpoints_[i].fresh;
  // What the target holds now. A document at its first revision and its only one, can only have
  // produced the rows it produces now (or rows of another version, which the sweep after a
  // re-run removes): those are looked up by id in one request. Anything else may have yielded
  // other keys before: its rows are found by their id prefix.
  std::map<std::string, Value*> existing;
  std::vector<std::string> ranged;  // source ids whose every current row must be found
  std::vector<std::string> keys;
  for (const Value* change : batch.results) {
    std::string id = Text(*change, "id");
    if (failed.count(id) > 0) continue;
    // With style=all_docs, `changes` lists every leaf revision, deleted ones too, and not
    // necessarily the winner first (pouchdb-server orders them by generation): the winner is
    // the document's _rev.
    const Value* changes = Member(*change, "changes");
    const Value* winner = Member(*change, "doc");
    std::string rev = winner != nullptr && winner->IsObject() ? Text(*winner, "_rev") : "";
    if (rev.empty() && changes && changes->IsArray() && !changes->Empty()) rev = Text((*changes)[0], "rev");
    const bool one_leaf = changes && changes->IsArray() && changes->Size() == 1;
    const Value* deleted = Member(*change, "deleted");
    bool is_deleted = deleted && deleted->IsBool() && deleted->GetBool();
    if (!is_deleted && Generation(rev) == 1 && one_leaf) {
      // A document with one revision, never changed, can only have produced the rows it
      // produces now. With another leaf (a conflict written by replication, or a deleted
      // branch) an earlier winner may have yielded other keys, whatever the generation of
      // this one: such documents are looked up by prefix below, in a fresh sync too.
      // In a fresh initial synchronization nothing derived from this source existed: the rows
      // of a document at its first revision are new, so they are written without asking. A
      // document CouchDB lists twice in _changes (a clustered database may, after a shard
      // moved) finds its rows written the first time: that conflict is looked up and redone.
      if (!fresh) {
        for (const Value& doc : desired[id]) keys.push_back(Text(doc, "_id"));
      }
    } else {
      ranged.push_back(id);
    }
  }
  std::vector<Document> answers;
  if (absl::Status st = LookUp(s.target, keys, 0, keys.size(), absl::StrCat("reading derived documents of ", s.target), answers); !st.ok()) return st;
  std::map<std::string, std::vector<std::string>> current_ids;  // ranged source id -> row ids
  for (const std::string& id : ranged) {
    absl::StatusOr<Document> found = couch_.Get(
        absl::StrCat(DbPath(s.target), "/_all_docs?include_docs=true&", RangeQuery(MapRowPrefix(s.source, id))),
        absl::StrCat("reading derived documents of ", s.target));
    if (!found.ok()) return found.status();
    std::vector<std::string>& ids = current_ids[id];
    if (const Value* rows = Member(*found, "rows"); rows && rows->IsArray()) {
      for (const Value& row : rows->GetArray()) ids.push_back(Text(row, "id"));
    }
    answers.push_back(*std::move(found));
  }
  for (Document& answer : answers) {
    Value* rows = const_cast<Value*>(Member(answer, "rows"));
    if (rows == nullptr || !rows->IsArray()) continue;
    for (Value& row : rows->GetArray()) {
      Value* doc = const_cast<Value*>(Member(row, "doc"));
      if (doc != nullptr && doc->IsObject()) existing[Text(row, "id")] = doc;
    }
  }
  std::vector<std::string> writes;
  for (auto& [id, docs] : desired) {
    for (Value& doc : docs) {
      auto it = existing.empty() ? existing.end() : existing.find(Text(doc, "_id"));
      std::string json = Desired(doc, ra, it == existing.end() ? nullptr : it->second);
      if (!json.empty()) writes.push_back(std::move(json));
    }
  }
  std::set<std::string> removed;  // rows whose source no longer yields them
  for (const auto& [id, row_ids] : current_ids) {
    std::set<std::string> keep;
    for (const Value& doc : desired[id]) keep.insert(Text(doc, "_id"));
    for (const std::string& row_id : row_ids) {
      auto it = existing.find(row_id);
      if (keep.count(row_id) == 0 && it != existing.end()) {
        writes.push_back(Tombstone(*it->second));
        removed.insert(row_id);
      }
    }
  }
  // Rows that changed since they were looked up (someone edited a derived document), or that
  // existed after all (a fresh sync's document listed twice in _changes, whose rows an earlier
  // batch wrote): compared with what is there now and written again only if they differ, or
  // removed again with their current revision (a row deleted meanwhile is written anew). A
  // row left stale until its source changes would be wrong with nothing but the errors
  // document to say so.
  std::map<std::string, Value*> by_id;  // made only if a write conflicts
  return WriteRedoingConflicts(s, writes, [&](const std::string& id, Value* current) -> std::optional<std::string> {
    if (removed.count(id) > 0) return current != nullptr ? Tombstone(*current) : "";
    if (by_id.empty()) {
      for (auto& [source_id, docs] : desired) {
        for (Value& doc : docs) by_id[Text(doc, "_id")] = &doc;
      }
    }
    auto it = by_id.find(id);
    if (it == by_id.end()) return std::nullopt;
    // The first pass may have given it the revision it looked up: compare without it.
    it->second->RemoveMember("_rev");
    return Desired(*it->second, ra, current);
  });
}

absl::StatusOr<int64_t> Deriver::WriteRedoingConflicts(const Stage& s, std::vector<std::string>& docs,
                                                       const Redo& redo) {
  int64_t count = static_cast<int64_t>(docs.size());
  std::vector<std::string> conflicts;
  if (absl::Status st = BulkWrite(s.target, docs, s, &conflicts); !st.ok()) return st;
  if (conflicts.empty()) return count;
  std::vector<Document> found;
  if (absl::Status st = LookUp(s.target, conflicts, 0, conflicts.size(),
                               absl::StrCat("reading derived documents of ", s.target), found);
      !st.ok()) {
    return st;
  }
  std::vector<std::string> again;
  std::set<std::string> redone;
  for (Document& answer : found) {
    Value* rows = const_cast<Value*>(Member(answer, "rows"));
    if (rows == nullptr || !rows->IsArray()) continue;
    for (Value& row : rows->GetArray()) {
      Value* doc = const_cast<Value*>(Member(row, "doc"));
      const std::string id = Text(row, "key");
      std::optional<std::string> write = redo(id, doc != nullptr && doc->IsObject() ? doc : nullptr);
      if (!write.has_value()) continue;
      redone.insert(id);
      if (!write->empty()) again.push_back(*std::move(write));
    }
  }
  for (const std::string& id : conflicts) {
    if (redone.count(id) == 0) {
      RecordError(s, id, "conflict", "CouchDB refused the write as a conflict and it could not be redone");
    }
  }
  count += static_cast<int64_t>(again.size()) - static_cast<int64_t>(conflicts.size());
  if (absl::Status st = BulkWrite(s.target, again, s); !st.ok()) return st;
  return count;
}

absl::StatusOr<int64_t> Deriver::ReduceBatch(size_t i, Batch& batch) {
  const Stage& s = declaration_.stages[i];
  for (const Batch::Failure& f : batch.failures) RecordError(s, f.doc_id, f.type, f.message);
  Document keys_doc(rapidjson::kObjectType);
  std::map<std::string, Value> keys;  // key JSON -> key
  for (const Value* change : batch.results) {
    const Value* doc = Member(*change, "doc");
    const Value* key = doc ? Member(*doc, "mr_key") : nullptr;
    if (key != nullptr) keys.emplace(couchdb::ToJson(*key), Value(*key, keys_doc.GetAllocator()));
  }
  if (keys.empty()) return 0;
  // Every row of each changed key, from the map target.
  std::map<std::string, std::vector<Value*>> groups;
  std::vector<Document> pages;
  for (auto& [key_json, key] : keys) {
    std::string bookmark;
    int64_t skip = 0;
    int limit = kLookupPage;  // halved while a page is too long to read (large rows)
    while (true) {
      Document query(rapidjson::kObjectType);
      auto& a = query.GetAllocator();
      Value eq(rapidjson::kObjectType);
      eq.AddMember("$eq", Value(key, a), a);
      Value selector(rapidjson::kObjectType);
      selector.AddMember("mr_key", eq, a);
      query.AddMember("selector", selector, a);
      query.AddMember("limit", limit, a);
      if (!bookmark.empty()) query.AddMember("bookmark", couchdb::StringValue(bookmark, a), a);
      else if (skip > 0) query.AddMember("skip", skip, a);
      absl::StatusOr<Document> page = couch_.Post(absl::StrCat(DbPath(s.source), "/_find"), couchdb::ToJson(query),
                                                  absl::StrCat("reading the rows of a key in ", s.source));
      if (absl::IsResourceExhausted(page.status()) && limit > 1) {
        limit /= 2;
        continue;
      }
      if (!page.ok()) return page.status();
      Value* docs = const_cast<Value*>(Member(*page, "docs"));
      // Without `docs` the page says nothing of the group: read as empty, the group's reduce
      // document would be deleted.
      if (docs == nullptr || !docs->IsArray()) {
        return absl::DataLossError(absl::StrCat(
            "the answer of ", s.source, "/_find has no list of documents (\"docs\"): the rows "
            "of a key cannot be read, so nothing of this batch is written or checkpointed; is "
            "the URL a CouchDB, or a proxy that rewrites its answers?"));
      }
      size_t n = docs->Size();
      for (size_t d = 0; d < n; ++d) {
        // $eq matches by CouchDB's collation (1, 1.0 and -0.0 are equal, and so are a string's
        // NFC and NFD forms), but a group is its key's JSON text, which names its reduce
        // document: a row of another text belongs to another group and reduce document.
        const Value* row_key = Member((*docs)[d], "mr_key");
        if (row_key != nullptr && couchdb::ToJson(*row_key) == key_json) groups[key_json].push_back(&(*docs)[d]);
      }
      // A full page whose bookmark does not move would be read again and again, every copy
      // kept: CouchDB's bookmark moves with every page it gives.
      const std::string next = Text(*page, "bookmark");
      if (n == static_cast<size_t>(limit) && !next.empty() && next == bookmark) {
        return absl::DataLossError(absl::StrCat(
            "the answer of ", s.source, "/_find gave a full page with the bookmark it was "
            "asked with: reading on would never end; nothing of this batch is written or "
            "checkpointed"));
      }
      bookmark = next;
      skip += static_cast<int64_t>(n);
      pages.push_back(*std::move(page));
      if (n < static_cast<size_t>(limit)) break;
    }
    auto& rows = groups[key_json];
    std::sort(rows.begin(), rows.end(),
              [](const Value* a, const Value* b) { return Text(*a, "_id") < Text(*b, "_id"); });
  }
  std::vector<Document> source_answers;
  if (s.with_sources) {
    std::map<std::string, std::set<std::string>> wanted;  // source database -> ids
    for (auto& [key_json, rows] : groups) {
      for (Value* row : rows) wanted[Text(*row, "mr_source_type")].insert(Text(*row, "mr_source_id"));
    }
    std::map<std::pair<std::string, std::string>, const Value*> found_docs;
    for (const auto& [database, ids] : wanted) {
      if (database.empty()) continue;
      const std::vector<std::string> list(ids.begin(), ids.end());
      const size_t before = source_answers.size();
      if (absl::Status st = LookUp(database, list, 0, list.size(), absl::StrCat("reading source documents of ", database), source_answers); !st.ok()) return st;
      // (The rows stay where they are when the vector moves the documents: only their roots move.)
      for (size_t n = before; n < source_answers.size(); ++n) {
        const Value* rows = Member(source_answers[n], "rows");
        if (rows == nullptr || !rows->IsArray()) continue;
        for (const Value& row : rows->GetArray()) {
          const Value* doc = Member(row, "doc");
          if (doc && doc->IsObject()) found_docs[{database, Text(row, "key")}] = doc;
        }
      }
    }
    for (Document& page : pages) {
      Value* docs = const_cast<Value*>(Member(page, "docs"));
      if (docs == nullptr || !docs->IsArray()) continue;
      for (Value& row : docs->GetArray()) {
        auto it = found_docs.find({Text(row, "mr_source_type"), Text(row, "mr_source_id")});
        Value copy = it == found_docs.end() ? Value(rapidjson::kNullType) : Value(*it->second, page.GetAllocator());
        row.AddMember("mr_source", copy, page.GetAllocator());
      }
    }
  }
  // The reduce documents as they are.
  std::vector<std::string> ids;
  for (const auto& [key_json, key] : keys) ids.push_back(ReduceRowId(s.source, key_json));
  std::vector<Document> found;
  if (absl::Status st = LookUp(s.target, ids, 0, ids.size(), absl::StrCat("reading derived documents of ", s.target), found); !st.ok()) return st;
  std::map<std::string, Value*> existing;
  for (Document& answer : found) {
    Value* rows = const_cast<Value*>(Member(answer, "rows"));
    if (rows == nullptr || !rows->IsArray()) continue;
    for (Value& row : rows->GetArray()) {
      Value* doc = const_cast<Value*>(Member(row, "doc"));
      if (doc && doc->IsObject()) existing[Text(row, "key")] = doc;
    }
  }
  std::vector<std::string> writes;
  std::map<std::string, Document> wanted;  // reduce document id -> what it is to hold
  std::set<std::string> emptied;           // reduce documents of keys without rows now
  for (auto& [key_json, key] : keys) {
    std::string id = ReduceRowId(s.source, key_json);
    auto it = existing.find(id);
    const std::vector<Value*>& rows = groups[key_json];
    if (rows.empty()) {
      if (it != existing.end()) writes.push_back(Tombstone(*it->second));
      emptied.insert(std::move(id));
      continue;
    }
    // [[[key, row id], row], ...], written by ToJson so that numbers stay exact.
    std::string kvs = "[";
    for (const Value* row : rows) {
      const Value* row_id = Member(*row, "_id");
      absl::StrAppend(&kvs, kvs.size() > 1 ? "," : "", "[[", key_json, ",",
                      row_id != nullptr ? couchdb::ToJson(*row_id) : "\"\"", "],", couchdb::ToJson(*row), "]");
    }
    kvs += "]";
    absl::StatusOr<v1::ReduceResponse> r = cnp_.Reduce({s.handler}, kvs, false, options_.rpc_timeout);
    if (std::optional<CallLimitError> error = OneOverCallLimit(
            r.status(), {"the rows of this key are more", "the result of this key is", "make the handler return less"})) {
      // That key's error, as if its handler had raised: its reduce document is left as it is.
      RecordError(s, absl::StrCat("key ", key_json), error->type, error->message);
      continue;
    }
    if (!r.ok()) {
      return InContext(r.status(), absl::StrCat("reduce handler ", s.handler, " (", s.source, " -> ", s.target, "): "));
    }
    if (r->errors_size() > 0) {
      for (const v1::FunctionError& e : r->errors()) RecordError(s, absl::StrCat("key ", key_json), e.type(), e.message());
      continue;
    }
    if (r->results_size() != 1) return absl::InternalError("the service answered no reduce result");
    absl::StatusOr<Document> value = couchdb::ParseJsonExact(r->results(0));
    if (!value.ok()) return absl::InternalError("the service answered a reduce result that is not JSON");
    Document& doc = wanted[id];
    doc.SetObject();
    doc.AddMember("_id", couchdb::StringValue(id, doc.GetAllocator()), doc.GetAllocator());
    FillDerived(doc, doc.GetAllocator(), key, *value, s.version, s.source, batch.dropped);
    std::string json = Desired(doc, doc.GetAllocator(), it == existing.end() ? nullptr : it->second);
    if (!json.empty()) writes.push_back(std::move(json));
  }
  WarnDropped(i, batch.dropped);
  // A reduce document written meanwhile (another writer, or someone by hand) is compared with
  // what it holds now and written again if it differs; one deleted meanwhile is written anew.
  return WriteRedoingConflicts(s, writes, [&](const std::string& id, Value* current) -> std::optional<std::string> {
    if (emptied.count(id) > 0) return current != nullptr ? Tombstone(*current) : "";
    auto it = wanted.find(id);
    if (it == wanted.end()) return std::nullopt;
    it->second.RemoveMember("_rev");  // the revision the first pass looked up
    return Desired(it->second, it->second.GetAllocator(), current);
  });
}

absl::Status Deriver::LookUp(const std::string& database, const std::vector<std::string>& ids, size_t first,
                             size_t end, const std::string& what, std::vector<Document>& answers) {
  if (first >= end) return absl::OkStatus();
  Document body(rapidjson::kObjectType);
  auto& a = body.GetAllocator();
  Value list(rapidjson::kArrayType);
  for (size_t n = first; n < end; ++n) {
    list.PushBack(couchdb::StringValue(ids[n], a), a);
  }
  body.AddMember("keys", list, a);
  absl::StatusOr<Document> found = couch_.Post(absl::StrCat(DbPath(database), "/_all_docs?include_docs=true"),
                                               couchdb::ToJson(body), what);
  if (absl::IsResourceExhausted(found.status()) && end - first > 1) {
    const size_t middle = first + (end - first) / 2;
    if (absl::Status st = LookUp(database, ids, first, middle, what, answers); !st.ok()) return st;
    return LookUp(database, ids, middle, end, what, answers);
  }
  if (!found.ok()) return found.status();
  answers.push_back(*std::move(found));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Deriver::Sweep(size_t i, bool every_version) {
  const Stage& s = declaration_.stages[i];
  // The target's refusals are recorded as errors by the writes: counted by the difference.
  const int64_t errors_before = progress_[i].errors;
  // A row changed since its page was read conflicts: removed at the revision it has now,
  // unless it was written at this version meanwhile.
  const Redo redo = [&](const std::string&, Value* current) -> std::optional<std::string> {
    if (current == nullptr) return "";
    const Value* version = Member(*current, "mr_version");
    if (!every_version && version && version->IsInt64() && version->GetInt64() == s.version) return "";
    return Tombstone(*current);
  };
  std::string prefix = absl::StrCat(s.source, ":");
  // Each page starts just after the last id of the one before (that id with U+0000 appended,
  // the least id greater than it), not at that id with skip=1: the last row was usually just
  // deleted, so _all_docs no longer lists it and skip=1 passed over the first row after it,
  // which then kept its old version for good.
  std::string start = prefix;
  int64_t removed = 0;
  int limit = kLookupPage;  // halved while a page is too long to read (large rows)
  while (true) {
    absl::StatusOr<Document> page = couch_.Get(
        absl::StrCat(DbPath(s.target), "/_all_docs?include_docs=true&limit=", limit,
                     "&startkey=", QueryString(start),
                     "&endkey=", QueryString(absl::StrCat(prefix, "\xef\xbf\xb0"))),
        absl::StrCat("reading derived documents of ", s.target));
    if (absl::IsResourceExhausted(page.status()) && limit > 1) {
      limit /= 2;
      continue;
    }
    if (!page.ok()) return page.status();
    const Value* rows = Member(*page, "rows");
    size_t n = rows && rows->IsArray() ? rows->Size() : 0;
    std::vector<std::string> writes;
    for (size_t r = 0; r < n; ++r) {
      const Value& row = (*rows)[r];
      start = Text(row, "id");
      start.push_back('\0');
      const Value* doc = Member(row, "doc");
      if (doc == nullptr || !doc->IsObject()) continue;
      const Value* version = Member(*doc, "mr_version");
      if (!every_version && version && version->IsInt64() && version->GetInt64() == s.version) continue;
      writes.push_back(Tombstone(*doc));
    }
    absl::StatusOr<int64_t> written = WriteRedoingConflicts(s, writes, redo);
    if (!written.ok()) return written.status();
    removed += *written;
    if (n < static_cast<size_t>(limit)) break;
  }
  if (removed > 0) {
    log_ << "cnp derive: " << s.source << " -> " << s.target << ": removed " << removed
         << (every_version ? " derived document(s) of the earlier database\n"
                           : " derived document(s) of other versions\n");
  }
  progress_[i].written += removed;
  return progress_[i].errors - errors_before;
}

absl::Status Deriver::CheckBulkAnswer(const Document& answer, size_t sent,
                                      const std::string& database) {
  const auto refuse = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(
        "the answer to writing ", sent, " derived document(s) to ", database, "/_bulk_docs ",
        what, ", not one result per document: what was written is unknown, so nothing is "
        "checkpointed (the next run writes them again); is the URL a CouchDB, or a proxy "
        "that rewrites its answers?"));
  };
  if (!answer.IsArray()) return refuse("is not a list");
  if (answer.Size() != sent) return refuse(absl::StrCat("has ", answer.Size(), " results"));
  for (const Value& result : answer.GetArray()) {
    if (!result.IsObject() || Text(result, "id").empty() ||
        (Text(result, "error").empty() && Text(result, "rev").empty())) {
      return refuse("has a result that is neither a revision nor an error");
    }
  }
  return absl::OkStatus();
}

absl::Status Deriver::BulkWrite(const std::string& database, std::vector<std::string>& docs,
                                const Stage& stage, std::vector<std::string>* conflicts) {
  if (docs.empty()) return absl::OkStatus();
  absl::StatusOr<bool> allowed = may_write_();
  if (!allowed.ok()) return allowed.status();
  if (!*allowed) return LeaseLostError("the lease was lost");
  // In parts of at most kMaxCallBytes: CouchDB refuses a request past its max_http_request_size.
  for (size_t first = 0; first < docs.size();) {
    std::string body = "{\"docs\":[";
    size_t end = first;
    while (end < docs.size() && (end == first || body.size() + docs[end].size() <= kMaxCallBytes)) {
      absl::StrAppend(&body, end > first ? "," : "", docs[end]);
      ++end;
    }
    body += "]}";
    const size_t sent = end - first;
    first = end;
    absl::StatusOr<Document> answer = FencedWrite("POST", absl::StrCat(DbPath(database), "/_bulk_docs"), body,
                                                  absl::StrCat("writing derived documents to ", database));
    if (!answer.ok()) return answer.status();
    // CouchDB answers one result per document, in order, each a new revision or an error. An
    // answer that is not that (a proxy's {"ok":true}, an empty list) says nothing of what was
    // written: taken as success, the rows it lost would have been checkpointed past for good.
    if (absl::Status checked = CheckBulkAnswer(*answer, sent, database); !checked.ok()) {
      return checked;
    }
    for (const Value& result : answer->GetArray()) {
      std::string error = Text(result, "error");
      if (error == "conflict" && conflicts != nullptr) {
        conflicts->push_back(Text(result, "id"));
      } else if (!error.empty()) {
        RecordError(stage, Text(result, "id"), error, Text(result, "reason"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Deriver::SaveCheckpoint(size_t i) {
  const Stage& s = declaration_.stages[i];
  Checkpoint& c = checkpoints_[i];
  Document doc(rapidjson::kObjectType);
  auto& a = doc.GetAllocator();
  if (!c.rev.empty()) doc.AddMember("_rev", couchdb::StringValue(c.rev, a), a);
  doc.AddMember("seq", couchdb::StringValue(progress_[i].seq, a), a);
  doc.AddMember("version", s.version, a);
  doc.AddMember("handler", couchdb::StringValue(s.handler, a), a);
  doc.AddMember("type", rapidjson::StringRef(s.reduce ? "reduce" : "map"), a);
  doc.AddMember("sweep", c.sweep || c.sweep_next_run, a);
  if (!c.source_id.empty()) doc.AddMember("source_id", couchdb::StringValue(c.source_id, a), a);
  doc.AddMember("updated_at_ms", absl::ToUnixMillis(absl::Now()), a);
  absl::StatusOr<Document> answer = FencedWrite("PUT", LocalDocPath(s.target, CheckpointId(declaration_.name, s)),
                                                couchdb::ToJson(doc), "writing a checkpoint");
  if (!answer.ok()) return answer.status();
  c.rev = Text(*answer, "rev");
  if (!c.old_rev.empty()) {
    // Left behind, it would be resumed from again whenever the new one is removed (to start the
    // stage over, say). Failing to remove it costs no derived data: the run goes on.
    const std::string old_id = *OldCheckpointId(declaration_.name, s);
    absl::StatusOr<Document> removed =
        FencedWrite("DELETE", absl::StrCat(LocalDocPath(s.target, old_id), "?rev=",
                                           couchdb::CouchClient::EscapeSegment(c.old_rev)),
                    "", "removing the checkpoint at its earlier id");
    if (IsLeaseLost(removed.status())) return removed.status();
    if (!removed.ok()) {
      log_ << "cnp derive: " << s.source << " -> " << s.target << ": the checkpoint _local/" << old_id
           << " of an earlier release stays: " << Printable(removed.status().message()) << "\n";
    }
    c.old_rev.clear();
  }
  return absl::OkStatus();
}

absl::StatusOr<Document> Deriver::FencedWrite(absl::string_view method, const std::string& path,
                                              absl::string_view json, absl::string_view what) {
  std::optional<absl::Duration> timeout;
  if (options_.fence != nullptr) {
    absl::StatusOr<absl::Duration> budget = options_.fence->WriteBudget();
    if (!budget.ok()) return budget.status();
    timeout = *budget;
  }
  absl::StatusOr<Document> answer = method == "POST" ? couch_.Post(path, json, what, timeout)
                                    : method == "PUT" ? couch_.Put(path, json, what, timeout)
                                                      : couch_.Delete(path, what, timeout);
  if (options_.fence != nullptr && absl::IsUnavailable(answer.status())) {
    // Given up on, or cut off at the lease's deadline: CouchDB may apply it yet, which the
    // next holder is told to wait out. Past the deadline, the lease is as good as lost.
    options_.fence->Unanswered();
    if (absl::StatusOr<absl::Duration> after = options_.fence->WriteBudget(); !after.ok()) {
      return LeaseLostError(absl::StrCat(answer.status().message(), "; ", after.status().message()));
    }
  }
  return answer;
}

void Deriver::RecordError(const Stage& stage, const std::string& doc_id, const std::string& type,
                          const std::string& message) {
  // The id, type and message come from documents and handlers: escaped, they cannot forge a
  // line of this log or drive the terminal.
  if (!error_log_limit_.Allow(absl::Now())) {
    // Counted and recorded below, not logged.
  } else if (type == kUnreadableType) {
    log_ << "cnp derive: " << stage.source << " -> " << stage.target << ": skipped "
         << Printable(doc_id) << " (not passed to " << stage.handler << "): " << type << ": "
         << Printable(message) << "\n";
  } else {
    log_ << "cnp derive: " << stage.source << " -> " << stage.target << ": " << stage.handler
         << " failed on " << Printable(doc_id) << ": " << Printable(type) << ": "
         << Printable(message) << "\n";
  }
  ++progress_[&stage - declaration_.stages.data()].errors;
  Document e(rapidjson::kObjectType);
  auto& a = e.GetAllocator();
  e.AddMember("doc_id", couchdb::StringValue(doc_id, a), a);
  e.AddMember("source", couchdb::StringValue(stage.source, a), a);
  e.AddMember("target", couchdb::StringValue(stage.target, a), a);
  e.AddMember("handler", couchdb::StringValue(stage.handler, a), a);
  e.AddMember("type", couchdb::StringValue(type, a), a);
  e.AddMember("message", couchdb::StringValue(message, a), a);
  e.AddMember("at_ms", absl::ToUnixMillis(absl::Now()), a);
  new_errors_.push_back(couchdb::ToJson(e));
}

void Deriver::WarnDropped(size_t i, const std::set<std::string>& dropped) {
  std::set<std::string>& warned = warned_dropped_[i];
  std::vector<std::string> fresh;
  for (const std::string& name : dropped) {
    if (warned.insert(name).second) fresh.push_back(Printable(name));
  }
  if (fresh.empty()) return;
  const Stage& s = declaration_.stages[i];
  log_ << "cnp derive: " << s.source << " -> " << s.target << ": warning: " << s.handler
       << " returned " << (fresh.size() == 1 ? "a field" : "fields") << " of its "
       << (s.reduce ? "result" : "rows' values") << " that derived documents cannot hold ("
       << absl::StrJoin(fresh, ", ")
       << "): a name starting with _ is CouchDB's and one starting with mr_ is the provenance's, "
          "so they are left out of the derived documents (the rest is written); rename them in "
          "the handler\n";
}

void Deriver::LogErrorsLeftOut(bool final) {
  const int64_t left_out = error_log_limit_.TakeLeftOut(absl::Now(), final);
  if (left_out == 0) return;
  log_ << "cnp derive: " << left_out << " more handler error(s) not logged (at most "
       << ErrorLogLimit::kBurst << " a minute are); each is counted in the progress line, and the last "
       << options_.max_recorded_errors << " are in _local/cnp-derive:" << declaration_.name << ":errors\n";
}

absl::Status Deriver::FlushErrors() {
  LogErrorsLeftOut(/*final=*/false);
  if (new_errors_.empty()) return absl::OkStatus();
  std::string path = LocalDocPath(home_, absl::StrCat("cnp-derive:", declaration_.name, ":errors"));
  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::StatusOr<std::optional<Document>> current = couch_.GetIfExists(path, "reading the errors document");
    if (!current.ok()) return current.status();
    Document doc(rapidjson::kObjectType);
    auto& a = doc.GetAllocator();
    Value errors(rapidjson::kArrayType);
    if (current->has_value()) {
      if (std::string rev = Text(**current, "_rev"); !rev.empty()) doc.AddMember("_rev", couchdb::StringValue(rev, a), a);
      if (const Value* old = Member(**current, "errors"); old && old->IsArray()) {
        for (const Value& e : old->GetArray()) errors.PushBack(Value(e, a), a);
      }
    }
    for (const std::string& json : new_errors_) {
      absl::StatusOr<Document> e = couchdb::ParseJson(json);
      if (e.ok()) errors.PushBack(Value(*e, a), a);
    }
    while (errors.Size() > static_cast<rapidjson::SizeType>(options_.max_recorded_errors)) errors.Erase(errors.Begin());
    doc.AddMember("errors", errors, a);
    absl::StatusOr<Document> answer = FencedWrite("PUT", path, couchdb::ToJson(doc), "writing the errors document");
    if (absl::IsAborted(answer.status())) continue;
    if (!answer.ok()) return answer.status();
    flushed_errors_ += static_cast<int64_t>(new_errors_.size());
    new_errors_.clear();
    return absl::OkStatus();
  }
  return absl::AbortedError("the errors document kept changing while it was written");
}

void Deriver::Report(size_t i, bool force) {
  absl::Time now = absl::Now();
  StageProgress& p = progress_[i];
  if (p.processed == reported_processed_[i]) return;
  if (!force && now - last_report_[i] < absl::Seconds(1)) return;
  last_report_[i] = now;
  reported_processed_[i] = p.processed;
  const Stage& s = declaration_.stages[i];
  if (p.backlog != 0) {
    absl::StatusOr<Document> info = couch_.Get(DbPath(s.source), "reading a source's update_seq");
    if (info.ok()) {
      if (const Value* update_seq = Member(*info, "update_seq")) {
        int64_t end = SeqNumber(SeqText(*update_seq)), at = SeqNumber(p.seq);
        if (end >= 0 && at >= 0) p.backlog = std::max<int64_t>(0, end - at);
      }
    }
  }
  double seconds = absl::ToDoubleSeconds(p.BusyAt(now));
  log_ << absl::StrFormat("cnp derive: %s -> %s: seq %s, %d change(s) (%.0f/s), %d written, backlog %s%s\n",
                          s.source, s.target, Printable(p.seq.substr(0, 24)), p.processed,
                          seconds > 0 ? p.processed / seconds : 0.0, p.written,
                          p.backlog < 0 ? "unknown" : absl::StrCat(p.backlog),
                          p.errors > 0 ? absl::StrCat(", ", p.errors, " handler error(s)") : "");
  log_.flush();
}

absl::Status Deriver::WriteStatus(const std::string& holder) {
  std::string path = LocalDocPath(home_, absl::StrCat("cnp-derive:", declaration_.name, ":status"));
  Document doc(rapidjson::kObjectType);
  auto& a = doc.GetAllocator();
  if (status_rev_.empty()) {
    absl::StatusOr<std::optional<Document>> current = couch_.GetIfExists(path, "reading the status document");
    if (!current.ok()) return current.status();
    if (current->has_value()) status_rev_ = Text(**current, "_rev");
  }
  if (!status_rev_.empty()) doc.AddMember("_rev", couchdb::StringValue(status_rev_, a), a);
  doc.AddMember("holder", couchdb::StringValue(holder, a), a);
  doc.AddMember("updated_at_ms", absl::ToUnixMillis(absl::Now()), a);
  Value stages(rapidjson::kArrayType);
  for (size_t i = 0; i < declaration_.stages.size(); ++i) {
    const Stage& s = declaration_.stages[i];
    const StageProgress& p = progress_[i];
    double seconds = absl::ToDoubleSeconds(p.BusyAt(absl::Now()));
    Value st(rapidjson::kObjectType);
    st.AddMember("target", couchdb::StringValue(s.target, a), a);
    st.AddMember("source", couchdb::StringValue(s.source, a), a);
    st.AddMember("type", rapidjson::StringRef(s.reduce ? "reduce" : "map"), a);
    st.AddMember("version", s.version, a);
    st.AddMember("seq", couchdb::StringValue(p.seq, a), a);
    st.AddMember("backlog", p.backlog, a);
    st.AddMember("processed", p.processed, a);
    st.AddMember("written", p.written, a);
    st.AddMember("errors", p.errors, a);
    st.AddMember("docs_per_s", seconds > 0 ? p.processed / seconds : 0.0, a);
    if (i < feeds_.size() && feeds_[i] != nullptr) {
      // A count that keeps growing says the feed is unstable (a proxy's timeout, a flaky link).
      st.AddMember("feed_reconnections", feeds_[i]->reconnections(), a);
    }
    stages.PushBack(st, a);
  }
  doc.AddMember("stages", stages, a);
  absl::StatusOr<Document> answer = FencedWrite("PUT", path, couchdb::ToJson(doc), "writing the status document");
  if (absl::IsAborted(answer.status())) {
    status_rev_.clear();  // another instance wrote it; next time we read its revision
    return absl::OkStatus();
  }
  if (!answer.ok()) return answer.status();
  status_rev_ = Text(*answer, "rev");
  status_written_ = absl::Now();
  return absl::OkStatus();
}

void Deriver::StartFeeds() {
  feeds_.resize(declaration_.stages.size());
  ChangesFeed::Options options;
  options.heartbeat = options_.heartbeat;
  // Two batches' worth: one being taken while the next arrives.
  options.max_queued = static_cast<size_t>(options_.batch_size) * 2;
  options.max_line_bytes = static_cast<size_t>(std::max<int64_t>(1, options_.continuous_feed->max_response_bytes));
  for (size_t i = 0; i < declaration_.stages.size(); ++i) {
    const Stage& s = declaration_.stages[i];
    // Reduce stages read their map target, which changes only through this instance's map
    // stages: the batch reads after those are enough.
    if (s.reduce) continue;
    feeds_[i] = std::make_unique<ChangesFeed>(*options_.continuous_feed, s.source, progress_[i].seq,
                                              options, feed_signal_);
    log_ << "cnp derive: " << s.source << " -> " << s.target << ": following the changes from seq "
         << Printable(progress_[i].seq.substr(0, 24)) << " (feed=continuous, heartbeat "
         << absl::FormatDuration(options_.heartbeat) << ")\n";
  }
  log_.flush();
}

void Deriver::PrintFeedNotes() {
  for (auto& feed : feeds_) {
    if (!feed) continue;
    for (const std::string& note : feed->TakeNotes()) {
      log_ << "cnp derive: " << Printable(note) << "\n";
    }
  }
  log_.flush();
}

absl::Status Deriver::WaitForChanges(absl::Duration max_wait) {
  if (!options_.continuous_feed.has_value()) return WaitOnLongpolls(max_wait);
  if (feeds_.empty()) StartFeeds();
  // A feed the server refused for good ends the run once what it queued has been handled.
  auto refused = [this]() -> absl::Status {
    for (auto& feed : feeds_) {
      if (feed && feed->queued() == 0) {
        if (absl::Status failure = feed->failure(); !failure.ok()) return failure;
      }
    }
    return absl::OkStatus();
  };
  const int64_t seen = feed_signal_.count();
  PrintFeedNotes();
  for (auto& feed : feeds_) {
    if (feed && feed->queued() > 0) return absl::OkStatus();
  }
  if (absl::Status st = refused(); !st.ok()) return st;
  feed_signal_.WaitPast(seen, max_wait);
  PrintFeedNotes();
  return refused();
}

absl::Status Deriver::WaitOnLongpolls(absl::Duration max_wait) {
  // One longpoll per source database. Reduce stages are left out: their map targets change
  // only through this instance's own map stages, which the next CatchUp runs first.
  std::vector<size_t> stages;
  std::set<std::string> sources;
  for (size_t i = 0; i < declaration_.stages.size(); ++i) {
    const Stage& s = declaration_.stages[i];
    if (!s.reduce && sources.insert(s.source).second) stages.push_back(i);
  }
  absl::Duration each = max_wait / std::max<size_t>(1, stages.size());
  for (size_t i : stages) {
    const Stage& s = declaration_.stages[i];
    const absl::Time asked = absl::Now();
    // A longpoll that ends at once with nothing (a proxy that answers for CouchDB, a server
    // that resets the connection) is followed by a pause, up to a second, not by the next
    // request at once: a follower must not turn a broken server into a busy loop.
    const auto pause_if_quick = [&] {
      const absl::Duration left = std::min(each, absl::Seconds(1)) - (absl::Now() - asked);
      if (left > absl::ZeroDuration()) absl::SleepFor(left);
    };
    absl::StatusOr<std::optional<Document>> answer = couch_.GetOrTimeOut(
        absl::StrCat(DbPath(s.source), "/_changes?feed=longpoll&limit=1&since=",
                     couchdb::CouchClient::EscapeSegment(progress_[i].seq),
                     "&timeout=", absl::ToInt64Milliseconds(each)),
        each + absl::Milliseconds(250));
    if (!answer.ok()) return answer.status();
    const Value* results = answer->has_value() ? Member(**answer, "results") : nullptr;
    if (results && results->IsArray() && !results->Empty()) return absl::OkStatus();
    pause_if_quick();
  }
  return absl::OkStatus();
}

}  // namespace cnp::derive
