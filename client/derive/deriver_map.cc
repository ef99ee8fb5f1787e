// A map stage's batch: its documents mapped by cnp-server (in parts, split while a call is
// refused for its size or runs past --timeout), and its rows written where they changed.
#include "client/derive/deriver.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "client/derive/deriver_parts.h"
#include "client/derive/derived_ids.h"
#include "common/call_limit.h"
#include "common/couchdb/json.h"

namespace cnp::derive {

using rapidjson::Document;
using rapidjson::Value;

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
  batch.timed_out_calls = std::move(tally.redone);
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
  return results;
}

absl::Status Deriver::ServiceAnswers(const Stage& s, absl::string_view what_timed_out) const {
  absl::StatusOr<v1::ResolveResponse> resolved = cnp_.Resolve({s.handler}, options_.rpc_timeout);
  if (!absl::IsDeadlineExceeded(resolved.status()) && !absl::IsUnavailable(resolved.status())) {
    return absl::OkStatus();
  }
  return absl::Status(resolved.status().code(),
                      absl::StrCat(s.reduce ? "reduce" : "map", " handler ", s.handler, " (", s.source, " -> ",
                                   s.target, "): ", what_timed_out, " ran past --timeout (",
                                   absl::FormatDuration(options_.rpc_timeout),
                                   "), and cnp-server did not answer a Resolve of the handler either (",
                                   resolved.status().message(),
                                   "): it is overloaded or unreachable; nothing was recorded, and a later run goes "
                                   "on from the checkpoint"));
}

absl::Status Deriver::NoCallAnswered(const Stage& s, size_t documents) const {
  return absl::DeadlineExceededError(absl::StrCat(
      "map handler ", s.handler, " (", s.source, " -> ", s.target, "): no call for this batch of ", documents,
      " document(s) was answered within --timeout (", absl::FormatDuration(options_.rpc_timeout),
      "), not even for one document alone: cnp-server may be overloaded, or the handler too slow for every "
      "document; nothing was recorded, and a later run goes on from the checkpoint"));
}

absl::Status Deriver::MapSplitting(const Stage& s, const std::vector<std::string>& docs, size_t first, size_t end,
                                   std::vector<v1::MapResult>& results, MapTally& tally) const {
  std::vector<std::string> part(docs.begin() + static_cast<std::ptrdiff_t>(first),
                                docs.begin() + static_cast<std::ptrdiff_t>(end));
  absl::StatusOr<v1::MapResponse> response = cnp_.Map({s.handler}, part, options_.rpc_timeout);
  const bool timed_out = absl::IsDeadlineExceeded(response.status());
  if (timed_out && end - first > 1) tally.redone.push_back(part.size());
  if (timed_out && end - first == 1) {
    // Its own error, once the service is seen to answer: a Resolve, when no call of the batch
    // was answered yet (a batch of one slow document has no other call to show it). A handler
    // too slow for the first documents tried, with none answered, is taken to be too slow for
    // all of them (a dependency gone, --timeout too short): the batch fails rather than pass
    // every document as a Timeout, one --timeout each.
    ++tally.timed_out;
    if (tally.answered == 0) {
      if (!tally.service_checked) {
        tally.service_checked = true;
        if (absl::Status answers = ServiceAnswers(s, "the Map call of one document"); !answers.ok()) return answers;
      }
      if (tally.timed_out >= kTimeoutsBeforeGivingUp) return NoCallAnswered(s, docs.size());
    }
    v1::MapResult& failed = results.emplace_back();
    failed.set_rows("[[]]");
    v1::FunctionError& e = *failed.add_errors();
    e.set_type("Timeout");
    e.set_message(absl::StrCat("the handler ran past --timeout (", absl::FormatDuration(options_.rpc_timeout),
                               ") on this document alone, so its rows were left as they are"));
    return absl::OkStatus();
  }
  if (timed_out && end - first > 1) {
    // Halving would wait --timeout once per level for each slow document, and 2N - 1 times
    // when the service answers nothing. Is it answering at all? A Resolve of the handler needs
    // a worker as a Map does, and runs none of the documents.
    if (!tally.service_checked) {
      tally.service_checked = true;
      if (absl::Status answers = ServiceAnswers(s, absl::StrCat("a Map call of ", part.size(), " document(s)"));
          !answers.ok()) {
        return answers;
      }
    }
    // It answers: each document alone, so that a slow one costs one --timeout.
    for (size_t one = first; one < end; ++one) {
      if (absl::Status st = MapSplitting(s, docs, one, one + 1, results, tally); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  if (OverCallLimit(response.status())) {
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
         << "); made again one document at a time to find the one(s) the handler is too slow for\n";
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
    const size_t first_page = answers.size();
    if (absl::Status st = LookUpPrefix(s.target, MapRowPrefix(s.source, id),
                                       absl::StrCat("reading derived documents of ", s.target), answers);
        !st.ok()) {
      return st;
    }
    std::vector<std::string>& ids = current_ids[id];
    for (size_t p = first_page; p < answers.size(); ++p) {
      if (const Value* rows = Member(answers[p], "rows"); rows && rows->IsArray()) {
        for (const Value& row : rows->GetArray()) ids.push_back(Text(row, "id"));
      }
    }
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
      if (keep.count(row_id) == 0 && it != existing.end() && IsDerivedFrom(*it->second, s.source)) {
        AppendTombstones(*it->second, writes);
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
    if (removed.count(id) > 0) {
      return current != nullptr && IsDerivedFrom(*current, s.source) ? Tombstone(*current) : "";
    }
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

}  // namespace cnp::derive
