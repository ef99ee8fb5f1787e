#include "client/sync/ownership_record.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "common/couchdb/json.h"

namespace cnp::client::sync {
namespace {

using ::cnp::couchdb::CouchClient;
using ::cnp::couchdb::HttpError;
using ::cnp::couchdb::HttpResponse;
using ::cnp::couchdb::ParseJson;
using ::cnp::couchdb::StringMember;
using ::cnp::couchdb::StringValue;

constexpr absl::string_view kRecordPrefix = "cnp-sync:";

std::string RecordPath(const std::string& database, const std::string& name) {
  return absl::StrCat(::cnp::couchdb::DatabasePath(database), "/_local/",
                      CouchClient::EscapeSegment(absl::StrCat(kRecordPrefix, name)));
}

// The revision before `rev` in a document's "_revisions" ({"start": N, "ids": [...]}, newest
// first): "" when `rev` is the first one, std::nullopt when the history does not start at it.
std::optional<std::string> PreviousRevision(const rapidjson::Value& doc, const std::string& rev) {
  auto revisions = doc.FindMember("_revisions");
  if (revisions == doc.MemberEnd() || !revisions->value.IsObject()) return std::nullopt;
  auto start = revisions->value.FindMember("start");
  auto ids = revisions->value.FindMember("ids");
  if (start == revisions->value.MemberEnd() || !start->value.IsInt64() ||
      ids == revisions->value.MemberEnd() || !ids->value.IsArray() || ids->value.Empty() ||
      !ids->value[0].IsString()) {
    return std::nullopt;
  }
  const int64_t generation = start->value.GetInt64();
  if (rev != absl::StrCat(generation, "-", ::cnp::couchdb::StringView(ids->value[0]))) {
    return std::nullopt;
  }
  if (generation == 1) return "";
  if (ids->value.Size() < 2 || !ids->value[1].IsString()) return std::nullopt;
  return absl::StrCat(generation - 1, "-", ::cnp::couchdb::StringView(ids->value[1]));
}

}  // namespace

absl::StatusOr<std::optional<OwnershipRecord>> ReadOwnershipRecord(CouchClient& couch,
                                                                   const std::string& database,
                                                                   const std::string& name) {
  absl::StatusOr<HttpResponse> got = couch.Get(RecordPath(database, name));
  if (!got.ok()) return got.status();
  if (got->status == 404) return std::nullopt;
  if (got->status != 200) {
    return HttpError(*got, absl::StrCat("reading _local/cnp-sync:", name, " from ", database),
                     couch.base_url());
  }
  // Exactly, as the announced design document is compared with the stored one so.
  absl::StatusOr<rapidjson::Document> doc = ::cnp::couchdb::ParseJsonExact(got->body);
  if (!doc.ok() || !doc->IsObject()) return std::nullopt;  // not ours to make sense of
  OwnershipRecord record{.record_rev = std::string(StringMember(*doc, "_rev")),
                         .registry = std::string(StringMember(*doc, "registry")),
                         .entry = std::string(StringMember(*doc, "entry")),
                         .design_rev = std::string(StringMember(*doc, "design_rev"))};
  if (auto writing = doc->FindMember("writing");
      writing != doc->MemberEnd() && writing->value.IsObject()) {
    record.writing.emplace();
    record.writing->CopyFrom(writing->value, record.writing->GetAllocator());
  }
  return record;
}

absl::Status WriteOwnershipRecord(CouchClient& couch, const std::string& database,
                                  const std::string& name, OwnershipRecord& record) {
  rapidjson::Document body(rapidjson::kObjectType);
  auto& a = body.GetAllocator();
  if (!record.record_rev.empty()) body.AddMember("_rev", StringValue(record.record_rev, a), a);
  body.AddMember("registry", StringValue(record.registry, a), a);
  body.AddMember("entry", StringValue(record.entry, a), a);
  const std::string id = absl::StrCat("_design/", name);
  body.AddMember("design_doc", StringValue(id, a), a);
  body.AddMember("design_rev", StringValue(record.design_rev, a), a);
  if (record.writing) {
    rapidjson::Value writing;
    writing.CopyFrom(*record.writing, a);
    body.AddMember("writing", writing, a);
  }
  absl::StatusOr<HttpResponse> put = couch.Put(RecordPath(database, name), ::cnp::couchdb::ToJson(body));
  if (!put.ok()) return put.status();
  if (put->status != 201 && put->status != 200 && put->status != 202) {
    return HttpError(*put,
                     absl::StrCat(record.writing ? "recording that cnp sync is about to write "
                                                 : "recording that cnp sync wrote ",
                                  id, " in ", database, " (_local/cnp-sync:", name, ")"),
                     couch.base_url());
  }
  absl::StatusOr<rapidjson::Document> answer = ParseJson(put->body);
  record.record_rev = answer.ok() ? std::string(StringMember(*answer, "rev")) : "";
  return absl::OkStatus();
}

void DeleteOwnershipRecord(CouchClient& couch, const std::string& database,
                           const std::string& name, const OwnershipRecord& record) {
  (void)couch.Delete(absl::StrCat(RecordPath(database, name), "?rev=",
                                  CouchClient::EscapeSegment(record.record_rev)));
}

absl::StatusOr<std::string> VouchedRevision(CouchClient& couch, const std::string& database,
                                            const std::string& name,
                                            const OwnershipRecord& record,
                                            const std::string& stored_rev) {
  if (!record.writing || stored_rev.empty() || stored_rev == record.design_rev) {
    return record.design_rev;
  }
  const std::string id = absl::StrCat("_design/", name);
  absl::StatusOr<HttpResponse> got =
      couch.Get(absl::StrCat(::cnp::couchdb::DesignDocPath(database, name), "?revs=true"));
  if (!got.ok()) return got.status();
  if (got->status == 404) return record.design_rev;
  if (got->status != 200) {
    return HttpError(*got, absl::StrCat("reading ", id, " from ", database), couch.base_url());
  }
  // Exactly: the announced document was written from the same exact reading of the registry.
  absl::StatusOr<rapidjson::Document> stored = ::cnp::couchdb::ParseJsonExact(got->body);
  if (!stored.ok() || !stored->IsObject()) return record.design_rev;
  const std::string rev(StringMember(*stored, "_rev"));
  if (rev != stored_rev || PreviousRevision(*stored, rev) != record.design_rev) {
    return record.design_rev;  // changed again since (by anyone): not the announced write
  }
  stored->RemoveMember("_rev");
  stored->RemoveMember("_revisions");
  rapidjson::Document announced;
  announced.CopyFrom(*record.writing, announced.GetAllocator());
  announced.RemoveMember("_rev");
  return ::cnp::couchdb::JsonEqual(*stored, announced) ? stored_rev : record.design_rev;
}

absl::StatusOr<std::vector<std::string>> NamesWithOwnershipRecords(
    CouchClient& couch, const std::string& database, const std::vector<std::string>& names) {
  std::vector<std::string> found;
  if (names.empty()) return found;
  const std::string from = absl::StrCat("\"_local/", kRecordPrefix, "\"");
  // The greatest character there is (U+10FFFF): CouchDB orders _local documents by their
  // ids' bytes, in which U+FFF0 comes before every character past it (an emoji, say), and a
  // name starting with one fell outside the range.
  const std::string to = absl::StrCat("\"_local/", kRecordPrefix, "\\udbff\\udfff\"");
  absl::StatusOr<HttpResponse> listed = couch.Get(absl::StrCat(
      ::cnp::couchdb::DatabasePath(database), "/_local_docs?startkey=",
      CouchClient::EscapeSegment(from), "&endkey=", CouchClient::EscapeSegment(to)));
  if (!listed.ok()) return listed.status();
  if (listed->status == 200) {
    absl::StatusOr<rapidjson::Document> list = ParseJson(listed->body);
    if (list.ok() && list->IsObject() && list->HasMember("rows") && (*list)["rows"].IsArray()) {
      std::set<std::string> wanted(names.begin(), names.end());
      for (const auto& row : (*list)["rows"].GetArray()) {
        absl::string_view id = StringMember(row, "id");
        if (!absl::ConsumePrefix(&id, "_local/") || !absl::ConsumePrefix(&id, kRecordPrefix)) {
          continue;
        }
        if (wanted.count(std::string(id)) != 0) found.emplace_back(id);
      }
      return found;
    }
  } else if (listed->status == 401 || listed->status == 403 || listed->status >= 500) {
    return HttpError(*listed, absl::StrCat("listing the _local documents of ", database),
                     couch.base_url());
  }
  // No _local_docs here (pouchdb-server, say): each name's record is read.
  for (const std::string& name : names) {
    absl::StatusOr<std::optional<OwnershipRecord>> record = ReadOwnershipRecord(couch, database, name);
    if (!record.ok()) return record.status();
    if (record->has_value()) found.push_back(name);
  }
  return found;
}

}  // namespace cnp::client::sync
