#include "common/couchdb/conflict_retry.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/couchdb/json.h"

namespace cnp::couchdb {
namespace {

absl::StatusOr<StoredDocument> ReadStored(CouchClient& couch, const ConflictRetriedWrite& write) {
  absl::StatusOr<HttpResponse> got =
      couch.Get(write.with_conflicts ? absl::StrCat(write.path, "?conflicts=true") : write.path);
  if (!got.ok()) return got.status();
  StoredDocument stored;
  if (got->status == 404 && !write.must_exist) return stored;
  if (got->status != 200) {
    return HttpError(*got, absl::StrCat("reading ", write.id, " from ", write.database),
                     couch.base_url());
  }
  // Exactly: what the stored document has and the writer does not mention is written back,
  // and CouchDB keeps an integer past 64 bits digit for digit.
  absl::StatusOr<rapidjson::Document> doc = ParseJsonExact(got->body);
  if (!doc.ok() || !doc->IsObject()) {
    return absl::UnknownError(
        absl::StrCat("CouchDB sent a malformed ", write.id, " from ", write.database));
  }
  stored.rev = std::string(StringMember(*doc, "_rev"));
  doc->RemoveMember("_rev");
  if (auto conflicts = doc->FindMember("_conflicts");
      conflicts != doc->MemberEnd() && conflicts->value.IsArray()) {
    for (const auto& rev : conflicts->value.GetArray()) {
      if (rev.IsString()) stored.conflicts.emplace_back(rev.GetString(), rev.GetStringLength());
    }
  }
  doc->RemoveMember("_conflicts");
  stored.doc = std::move(*doc);
  return stored;
}

}  // namespace

absl::StatusOr<WriteResult> WriteWithConflictRetry(CouchClient& couch,
                                                   const ConflictRetriedWrite& write,
                                                   const DecideWrite& decide) {
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<StoredDocument> stored = ReadStored(couch, write);
    if (!stored.ok()) return stored.status();
    WriteResult result;
    result.existed = stored->doc.has_value();
    result.stored_rev = stored->rev;
    result.conflict_retries = attempt;
    absl::StatusOr<WriteDecision> decision = decide(*stored, attempt);
    if (!decision.ok()) return decision.status();
    if (!decision->has_value()) return result;

    rapidjson::Document& document = **decision;
    if (result.existed) {
      auto& alloc = document.GetAllocator();
      document.RemoveMember("_rev");
      document.AddMember("_rev", StringValue(stored->rev, alloc), alloc);
    }
    absl::StatusOr<HttpResponse> put = couch.Put(write.path, ToJson(document));
    if (!put.ok()) return put.status();
    if (put->status == 409) {
      if (attempt >= write.max_conflict_retries) {
        return absl::AbortedError(absl::StrCat(
            write.id, " in ", write.database, " changed concurrently ", attempt + 1,
            " times while ", write.activity, "; gave up without overwriting it"));
      }
      if (write.on_retry) {
        write.on_retry(absl::StrCat(write.id, " in ", write.database,
                                    " was changed by someone else while ", write.activity,
                                    "; re-reading and comparing again"));
      }
      continue;
    }
    if (put->status != 201 && put->status != 202) {
      return HttpError(*put,
                       write.writing.empty()
                           ? absl::StrCat("writing ", write.id, " to ", write.database)
                           : write.writing,
                       couch.base_url());
    }
    // CouchDB answers a write it made with its new revision: without one (an HTML page, a
    // proxy's {"ok":false}) nothing says that the write was made, and it must not be reported
    // as written.
    absl::StatusOr<rapidjson::Document> answer = ParseJson(put->body);
    if (answer.ok()) result.written_rev = std::string(StringMember(*answer, "rev"));
    if (result.written_rev.empty()) {
      return absl::UnknownError(absl::StrCat(
          "CouchDB at ", couch.base_url(), " answered HTTP ", put->status, " to ",
          write.writing.empty() ? absl::StrCat("writing ", write.id, " to ", write.database)
                                : write.writing,
          " without the new revision: whether it was written is unknown (is the URL a "
          "CouchDB?)"));
    }
    result.written = true;
    return result;
  }
}

}  // namespace cnp::couchdb
