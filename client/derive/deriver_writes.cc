// What the deriver writes to its targets and how: _bulk_docs in parts with conflicts redone,
// lookups split while too large, the sweep of other versions, checkpoints, writes under the
// lease's fence, and the errors document.
#include "client/derive/deriver.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/derive/deriver_parts.h"
#include "client/derive/lease.h"
#include "common/couchdb/json.h"
#include "common/printable_text.h"

namespace cnp::derive {

using rapidjson::Document;
using rapidjson::Value;

absl::StatusOr<int64_t> Deriver::WriteRedoingConflicts(const Stage& s, std::vector<std::string>& docs,
                                                       const Redo& redo) {
  // What the target refused (each recorded as an error as its answer is read) is not written.
  const int64_t& errors = progress_[&s - declaration_.stages.data()].errors;
  const int64_t errors_before = errors;
  int64_t count = static_cast<int64_t>(docs.size());
  std::vector<std::string> conflicts;
  if (absl::Status st = BulkWrite(s.target, docs, s, &conflicts); !st.ok()) return st;
  count -= errors - errors_before;
  if (conflicts.empty()) return count;
  count -= static_cast<int64_t>(conflicts.size());
  // An id once: a document deleted with its conflicting revisions may have had several of
  // its writes refused.
  std::set<std::string> seen;
  conflicts.erase(std::remove_if(conflicts.begin(), conflicts.end(),
                                 [&](const std::string& id) { return !seen.insert(id).second; }),
                  conflicts.end());
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
    if (redone.count(id) > 0) continue;
    // The document sent, for its source's id (rare: found by parsing what was sent).
    absl::string_view sent;
    for (const std::string& doc : docs) {
      if (absl::StatusOr<Document> parsed = couchdb::ParseJson(doc); parsed.ok() && Text(*parsed, "_id") == id) {
        sent = doc;
        break;
      }
    }
    RecordWriteRefusal(s, sent, id, "conflict", "a conflict, and it could not be redone");
  }
  count += static_cast<int64_t>(again.size());
  const int64_t errors_before_redo = errors;
  if (absl::Status st = BulkWrite(s.target, again, s); !st.ok()) return st;
  return count - (errors - errors_before_redo);
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
  absl::StatusOr<Document> found = couch_.Post(absl::StrCat(DbPath(database), "/_all_docs?include_docs=true&conflicts=true"),
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

absl::Status Deriver::LookUpPrefix(const std::string& database, const std::string& prefix, const std::string& what,
                                   std::vector<Document>& pages) {
  // Paged as the sweep is (each page after the last id of the one before): a document may have
  // yielded more rows than one answer can hold.
  std::string start = prefix;
  int limit = kLookupPage;  // halved while a page is too long to read (large rows)
  while (true) {
    absl::StatusOr<Document> page = couch_.Get(
        absl::StrCat(DbPath(database), "/_all_docs?include_docs=true&conflicts=true&limit=", limit, "&startkey=", QueryString(start),
                     "&endkey=", QueryString(absl::StrCat(prefix, "\xef\xbf\xb0"))),
        what);
    if (absl::IsResourceExhausted(page.status()) && limit > 1) {
      limit /= 2;
      continue;
    }
    if (!page.ok()) return page.status();
    const Value* rows = Member(*page, "rows");
    const size_t n = rows && rows->IsArray() ? rows->Size() : 0;
    if (n > 0) {
      start = Text((*rows)[n - 1], "id");
      start.push_back('\0');
    }
    pages.push_back(*std::move(page));
    if (n < static_cast<size_t>(limit)) return absl::OkStatus();
  }
}

absl::StatusOr<int64_t> Deriver::Sweep(size_t i, bool every_version) {
  const Stage& s = declaration_.stages[i];
  // The target's refusals are recorded as errors by the writes: counted by the difference.
  const int64_t errors_before = progress_[i].errors;
  // A row changed since its page was read conflicts: removed at the revision it has now,
  // unless it was written at this version meanwhile.
  const Redo redo = [&](const std::string&, Value* current) -> std::optional<std::string> {
    if (current == nullptr || !IsDerivedFrom(*current, s.source)) return "";
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
  int64_t removed = 0;       // revisions deleted (a document with conflicts has several)
  int64_t removed_docs = 0;  // documents deleted, which the operator is told
  int64_t foreign_docs = 0;  // documents under the prefix that cnp derive did not write: kept
  int limit = kLookupPage;  // halved while a page is too long to read (large rows)
  while (true) {
    absl::StatusOr<Document> page = couch_.Get(
        absl::StrCat(DbPath(s.target), "/_all_docs?include_docs=true&conflicts=true&limit=", limit,
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
      if (!IsDerivedFrom(*doc, s.source)) {
        ++foreign_docs;
        continue;
      }
      const Value* version = Member(*doc, "mr_version");
      if (!every_version && version->GetInt64() == s.version) continue;
      const size_t before = writes.size();
      AppendTombstones(*doc, writes);
      if (writes.size() > before) ++removed_docs;
    }
    absl::StatusOr<int64_t> written = WriteRedoingConflicts(s, writes, redo);
    if (!written.ok()) return written.status();
    removed += *written;
    if (n < static_cast<size_t>(limit)) break;
  }
  if (removed_docs > 0) {
    log_ << "cnp derive: " << s.source << " -> " << s.target << ": removed " << removed_docs
         << (every_version ? " derived document(s) of the earlier database\n"
                           : " derived document(s) of other versions\n");
  }
  if (foreign_docs > 0) {
    log_ << "cnp derive: " << s.source << " -> " << s.target << ": warning: kept " << foreign_docs
         << " document(s) whose ids start with '" << prefix << "' but which cnp derive did not "
         << "write (no mr_source_type \"" << s.source << "\" with a mr_version): ids of that "
         << "form are where the rows derived from " << s.source << " go; give yours other ids\n";
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
    size_t end = first, bytes = 0;
    while (end < docs.size() && (end == first || bytes + docs[end].size() <= kMaxCallBytes)) bytes += docs[end++].size();
    if (absl::Status st = BulkWriteSplitting(database, docs, first, end, stage, conflicts); !st.ok()) return st;
    first = end;
  }
  return absl::OkStatus();
}

absl::Status Deriver::BulkWriteSplitting(const std::string& database, const std::vector<std::string>& docs,
                                         size_t first, size_t end, const Stage& stage,
                                         std::vector<std::string>* conflicts) {
  std::string body = "{\"docs\":[";
  for (size_t n = first; n < end; ++n) absl::StrAppend(&body, n > first ? "," : "", docs[n]);
  body += "]}";
  absl::StatusOr<Document> answer = FencedWrite("POST", absl::StrCat(DbPath(database), "/_bulk_docs"), body,
                                                absl::StrCat("writing derived documents to ", database));
  if (couchdb::IsRequestTooLarge(answer.status())) {
    // CouchDB refuses the whole request for one document past its max_document_size: the others
    // go in halves, and that one alone is its error, as if CouchDB had refused it in the answer.
    if (end - first > 1) {
      const size_t middle = first + (end - first) / 2;
      if (absl::Status st = BulkWriteSplitting(database, docs, first, middle, stage, conflicts); !st.ok()) return st;
      return BulkWriteSplitting(database, docs, middle, end, stage, conflicts);
    }
    absl::StatusOr<Document> doc = couchdb::ParseJson(docs[first]);
    RecordWriteRefusal(stage, docs[first], doc.ok() ? Text(*doc, "_id") : "", "document_too_large",
                       std::string(answer.status().message()));
    return absl::OkStatus();
  }
  if (!answer.ok()) return answer.status();
  // CouchDB answers one result per document, in order, each a new revision or an error. An
  // answer that is not that (a proxy's {"ok":true}, an empty list) says nothing of what was
  // written: taken as success, the rows it lost would have been checkpointed past for good.
  if (absl::Status checked = CheckBulkAnswer(*answer, end - first, database); !checked.ok()) return checked;
  size_t n = first;
  for (const Value& result : answer->GetArray()) {
    std::string error = Text(result, "error");
    if (error == "conflict" && conflicts != nullptr) {
      conflicts->push_back(Text(result, "id"));
    } else if (!error.empty()) {
      RecordWriteRefusal(stage, docs[n], Text(result, "id"), error, Text(result, "reason"));
    }
    ++n;
  }
  return absl::OkStatus();
}

void Deriver::RecordWriteRefusal(const Stage& stage, absl::string_view derived,
                                 const std::string& derived_id, const std::string& type,
                                 const std::string& reason) {
  // Under the source document, as the handler's own errors are: the one to look at, and the
  // one a later run meets again. A reduce target's rows come from no one document.
  std::string source_id;
  if (absl::StatusOr<Document> doc = couchdb::ParseJson(derived); doc.ok()) {
    source_id = Text(*doc, "mr_source_id");
  }
  RecordError(stage, source_id.empty() ? derived_id : source_id, type,
              absl::StrCat(stage.target, " refused the derived document ", derived_id,
                           " (not the handler's doing): ", reason),
              /*by_target=*/true);
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
                          const std::string& message, bool by_target) {
  // The id, type and message come from documents and handlers: escaped, they cannot forge a
  // line of this log or drive the terminal.
  if (!error_log_limit_.Allow(absl::Now())) {
    // Counted and recorded below, not logged.
  } else if (type == kUnreadableType) {
    log_ << "cnp derive: " << stage.source << " -> " << stage.target << ": skipped "
         << Printable(doc_id) << " (not passed to " << stage.handler << "): " << type << ": "
         << Printable(message) << "\n";
  } else if (by_target) {
    log_ << "cnp derive: " << stage.source << " -> " << stage.target << ": what "
         << stage.handler << " derived from " << Printable(doc_id) << " was not stored: "
         << Printable(type) << ": " << Printable(message) << "\n";
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
  log_ << "cnp derive: " << left_out << " more document error(s) not logged (at most "
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
    const Value* old = nullptr;
    if (current->has_value()) {
      if (std::string rev = Text(**current, "_rev"); !rev.empty()) doc.AddMember("_rev", couchdb::StringValue(rev, a), a);
      old = Member(**current, "errors");
      if (old != nullptr && !old->IsArray()) old = nullptr;
    }
    // The newest max_recorded_errors of the old and the new, only those copied.
    const size_t kept = static_cast<size_t>(std::max(options_.max_recorded_errors, 0));
    const size_t old_count = old != nullptr ? old->Size() : 0;
    size_t skip = old_count + new_errors_.size() > kept ? old_count + new_errors_.size() - kept : 0;
    Value errors(rapidjson::kArrayType);
    for (size_t n = skip; n < old_count; ++n) errors.PushBack(Value((*old)[static_cast<rapidjson::SizeType>(n)], a), a);
    skip = skip > old_count ? skip - old_count : 0;
    for (size_t n = skip; n < new_errors_.size(); ++n) {
      absl::StatusOr<Document> e = couchdb::ParseJson(new_errors_[n]);
      if (e.ok()) errors.PushBack(Value(*e, a), a);
    }
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

}  // namespace cnp::derive
