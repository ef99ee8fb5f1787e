// A reduce stage's batch: each changed key's rows read back from the map target and reduced
// whole by cnp-server, and its reduce document written where it changed.
#include "client/derive/deriver.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "client/derive/deriver_parts.h"
#include "client/derive/derived_ids.h"
#include "common/call_limit.h"
#include "common/couchdb/couch_client.h"
#include "common/couchdb/json.h"
#include "common/printable_text.h"

namespace cnp::derive {

using rapidjson::Document;
using rapidjson::Value;

// A group read that does not show this batch's changes is read again this many times in all,
// after waits from kBehindFirstWait doubling (1.55 s in all), before the batch is given up.
constexpr int kBehindReads = 6;
constexpr absl::Duration kBehindFirstWait = absl::Milliseconds(50);

absl::StatusOr<int64_t> Deriver::ReduceBatch(size_t i, Batch& batch) {
  const Stage& s = declaration_.stages[i];
  for (const Batch::Failure& f : batch.failures) RecordError(s, f.doc_id, f.type, f.message);
  Document keys_doc(rapidjson::kObjectType);
  std::map<std::string, Value> keys;  // key JSON -> key
  std::map<std::string, std::vector<RowWitness>> witnesses;  // key JSON -> its rows' changes here
  for (const Value* change : batch.results) {
    const Value* doc = Member(*change, "doc");
    const Value* key = doc ? Member(*doc, "mr_key") : nullptr;
    std::optional<Document> key_before;
    const Value* deleted = doc ? Member(*doc, "_deleted") : nullptr;
    if (key == nullptr && deleted != nullptr && deleted->IsTrue()) {
      // Deleted by hand: its group lost a row all the same, and is reduced again.
      absl::StatusOr<std::optional<Document>> before = KeyBeforeDeletion(s.source, *doc);
      if (absl::IsNotFound(before.status())) {
        RecordError(s, Text(*doc, "_id"), "UnknownKey", std::string(before.status().message()));
        continue;
      }
      if (!before.ok()) return before.status();
      key_before = *std::move(before);
      if (key_before.has_value()) key = &*key_before;
    }
    if (key == nullptr) continue;
    const std::string key_json = couchdb::ToJson(*key);
    keys.emplace(key_json, Value(*key, keys_doc.GetAllocator()));
    witnesses[key_json].push_back({Text(*doc, "_id"), Generation(Text(*doc, "_rev")),
                                   deleted != nullptr && deleted->IsTrue()});
  }
  if (keys.empty()) return 0;
  // Every row of each changed key, from the map target.
  std::map<std::string, std::vector<Value*>> groups;
  std::vector<Document> pages;
  std::set<std::string> too_large;  // keys whose rows pass options_.max_group_bytes
  for (auto& [key_json, key] : keys) {
    const size_t first_page = pages.size();
    absl::Duration wait = kBehindFirstWait;
    for (int read = 1;; ++read) {
      if (absl::Status st = ReadGroup(s, key_json, key, pages, groups, too_large); !st.ok()) return st;
      if (too_large.count(key_json) > 0) break;
      // The rows must show every change of this batch to the key: _find answers from one copy
      // of each shard range, which on a cluster may not have had the write yet.
      std::vector<RowWitness>& shown = witnesses[key_json];
      std::optional<std::string> behind = Unreflected(shown, groups[key_json]);
      if (behind.has_value() && read >= kBehindReads) {
        // A row missing from the group may have left the key since its change (deleted, or
        // moved to another key): that is a later batch's, not held against this read.
        std::vector<RowWitness> still;
        for (const RowWitness& w : shown) {
          absl::StatusOr<bool> left = w.deleted ? false : LeftKey(s, key_json, w);
          if (!left.ok()) return left.status();
          if (!*left) still.push_back(w);
        }
        behind = Unreflected(still, groups[key_json]);
      }
      if (!behind.has_value()) break;
      if (read >= kBehindReads) {
        return IndexBehindError(absl::StrCat(
            "the rows of key ", key_json, " in ", s.source, ", read ", read, " times with _find, ", *behind,
            ": a copy of the database behind the others (a cluster's _find reads one copy of each "
            "shard range); nothing of this batch is written or checkpointed"));
      }
      groups.erase(key_json);
      pages.resize(first_page);
      absl::SleepFor(wait);
      wait *= 2;
    }
    if (too_large.count(key_json) > 0) continue;
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
        // As _changes gives it: LookUp reads with conflicts=true, for the derived documents.
        if (copy.IsObject()) copy.RemoveMember("_conflicts");
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
  int answered = 0, timed_out = 0;         // Reduce calls of this batch, for a handler too slow
  for (auto& [key_json, key] : keys) {
    if (too_large.count(key_json) > 0) {
      RecordError(s, absl::StrCat("key ", key_json), kRequestTooLargeType,
                  absl::StrCat("the rows of this key are more than cnp derive sends in one call (",
                               options_.max_group_bytes,
                               " bytes, the client library's limit), so its reduce document was left as it is"));
      continue;
    }
    std::string id = ReduceRowId(s.source, key_json);
    auto it = existing.find(id);
    const std::vector<Value*>& rows = groups[key_json];
    if (rows.empty()) {
      if (it != existing.end() && IsDerivedFrom(*it->second, s.source)) {
        AppendTombstones(*it->second, writes);
      }
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
    if (absl::IsDeadlineExceeded(r.status())) {
      // That key's error, as a document's in a map stage: when the service answers, and the
      // handler was not too slow for every key tried so far.
      ++timed_out;
      if (answered == 0) {
        if (timed_out == 1) {
          if (absl::Status st = ServiceAnswers(s, absl::StrCat("the Reduce call of key ", key_json)); !st.ok()) {
            return st;
          }
        }
        if (timed_out >= kTimeoutsBeforeGivingUp) {
          return absl::DeadlineExceededError(absl::StrCat(
              "reduce handler ", s.handler, " (", s.source, " -> ", s.target, "): the Reduce calls of the first ",
              timed_out, " keys of this batch all ran past --timeout (", absl::FormatDuration(options_.rpc_timeout),
              ") and none was answered: the handler is too slow for them (raise --timeout?); nothing was "
              "recorded, and a later run goes on from the checkpoint"));
        }
      }
      RecordError(s, absl::StrCat("key ", key_json), "Timeout",
                  absl::StrCat("the handler ran past --timeout (", absl::FormatDuration(options_.rpc_timeout),
                               ") on this key's rows, so its reduce document was left as it is"));
      continue;
    }
    if (r.ok()) ++answered;
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
    if (emptied.count(id) > 0) {
      return current != nullptr && IsDerivedFrom(*current, s.source) ? Tombstone(*current) : "";
    }
    auto it = wanted.find(id);
    if (it == wanted.end()) return std::nullopt;
    it->second.RemoveMember("_rev");  // the revision the first pass looked up
    return Desired(it->second, it->second.GetAllocator(), current);
  });
}

absl::Status Deriver::ReadGroup(const Stage& s, const std::string& key_json, const Value& key,
                                std::vector<Document>& pages, std::map<std::string, std::vector<Value*>>& groups,
                                std::set<std::string>& too_large) {
  const size_t first_page = pages.size();
  std::string bookmark;
  int64_t skip = 0;
  int limit = kLookupPage;  // halved while a page is too long to read (large rows)
  size_t group_bytes = 0;
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
    size_t page_bytes = 0;
    absl::StatusOr<Document> page = couch_.Post(absl::StrCat(DbPath(s.source), "/_find"), couchdb::ToJson(query),
                                                absl::StrCat("reading the rows of a key in ", s.source), page_bytes);
    if (absl::IsResourceExhausted(page.status()) && limit > 1) {
      limit /= 2;
      continue;
    }
    if (!page.ok()) return page.status();
    group_bytes += page_bytes;
    if (group_bytes > options_.max_group_bytes) {
      // No Reduce call could carry them: what was read of them goes now.
      too_large.insert(key_json);
      groups.erase(key_json);
      pages.resize(first_page);
      break;
    }
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
  return absl::OkStatus();
}

std::optional<std::string> Deriver::Unreflected(const std::vector<RowWitness>& witnesses,
                                                const std::vector<Value*>& rows) {
  if (witnesses.empty()) return std::nullopt;
  std::map<std::string, int64_t> read;  // row id -> the generation read
  for (const Value* row : rows) read[Text(*row, "_id")] = Generation(Text(*row, "_rev"));
  for (const RowWitness& w : witnesses) {
    const auto it = read.find(w.id);
    const bool found = it != read.end();
    const int64_t generation = found ? it->second : 0;
    if (!w.deleted && generation < w.generation) {
      return absl::StrCat("lack row ", Printable(w.id), " at revision ", w.generation, " or later");
    }
    if (w.deleted && found && generation < w.generation) {
      return absl::StrCat("still hold row ", Printable(w.id), ", deleted at revision ", w.generation);
    }
  }
  return std::nullopt;
}

absl::StatusOr<bool> Deriver::LeftKey(const Stage& s, const std::string& key_json, const RowWitness& row) {
  absl::StatusOr<std::optional<Document>> now = couch_.GetIfExists(
      absl::StrCat(DbPath(s.source), "/", couchdb::CouchClient::EscapeSegment(row.id)),
      absl::StrCat("reading row ", row.id, " of ", s.source));
  if (!now.ok()) return now.status();
  if (!now->has_value()) return true;  // deleted since
  const Value* key = Member(**now, "mr_key");
  return key == nullptr || couchdb::ToJson(*key) != key_json;
}

absl::StatusOr<std::optional<Document>> Deriver::KeyBeforeDeletion(const std::string& database,
                                                                   const Value& tombstone) {
  const std::string id = Text(tombstone, "_id");
  const std::string path = absl::StrCat(DbPath(database), "/", couchdb::CouchClient::EscapeSegment(id));
  absl::StatusOr<std::optional<Document>> deletion = couch_.GetIfExists(
      absl::StrCat(path, "?revs=true&rev=", couchdb::CouchClient::EscapeSegment(Text(tombstone, "_rev"))),
      absl::StrCat("reading the revisions of ", id, ", deleted, in ", database));
  if (!deletion.ok()) return deletion.status();
  // Purged, or deleted again since (its revision superseded; that change comes later).
  if (!deletion->has_value()) return std::nullopt;
  const Value* revisions = Member(**deletion, "_revisions");
  const Value* start = revisions ? Member(*revisions, "start") : nullptr;
  const Value* ids = revisions ? Member(*revisions, "ids") : nullptr;
  // Created deleted: it was never a row.
  if (start == nullptr || !start->IsInt64() || ids == nullptr || !ids->IsArray() || ids->Size() < 2 ||
      !(*ids)[1].IsString()) {
    return std::nullopt;
  }
  const std::string before_rev = absl::StrCat(start->GetInt64() - 1, "-", couchdb::StringView((*ids)[1]));
  absl::StatusOr<std::optional<Document>> before = couch_.GetIfExists(
      absl::StrCat(path, "?rev=", couchdb::CouchClient::EscapeSegment(before_rev)),
      absl::StrCat("reading ", id, " as it was before it was deleted, in ", database));
  if (!before.ok()) return before.status();
  if (!before->has_value()) {
    return absl::NotFoundError(absl::StrCat(
        "this row of ", database, " was deleted without its mr_key (by hand?), and its revision "
        "before the deletion, which says which key lost a row, is gone (compacted): that key's "
        "reduce document may still count it; bump the reduce stage's version to reduce every key anew"));
  }
  const Value* key = Member(**before, "mr_key");
  const Value* deleted = Member(**before, "_deleted");
  if (key == nullptr || (deleted != nullptr && deleted->IsTrue())) return std::nullopt;  // no row then
  Document out;
  out.CopyFrom(*key, out.GetAllocator());
  return std::optional<Document>(std::move(out));
}

}  // namespace cnp::derive
