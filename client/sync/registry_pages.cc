#include "client/sync/registry_pages.h"

#include "absl/strings/str_cat.h"
#include "common/couchdb/json.h"

namespace cnp::client::sync {

absl::Status ForEachRegistryDocument(couchdb::CouchClient& couch, const std::string& registry,
                                     const std::string& what,
                                     const std::function<void(const rapidjson::Value&)>& each) {
  int limit = kRegistryPage;
  std::string after;  // the last id read, as JSON; empty before the first page
  for (;;) {
    std::string path = absl::StrCat(couchdb::DatabasePath(registry),
                                     "/_all_docs?include_docs=true&limit=", limit);
    if (!after.empty()) {
      absl::StrAppend(&path, "&skip=1&startkey=", couchdb::CouchClient::EscapeSegment(after));
    }
    absl::StatusOr<couchdb::HttpResponse> response = couch.Get(path);
    if (absl::IsResourceExhausted(response.status()) && limit > 1) {
      limit /= 2;
      continue;
    }
    if (!response.ok()) return response.status();
    if (response->status != 200) return couchdb::HttpError(*response, what, couch.base_url());
    absl::StatusOr<rapidjson::Document> page = couchdb::ParseJsonExact(response->body);
    if (!page.ok() || !page->IsObject() || !page->HasMember("rows") || !(*page)["rows"].IsArray()) {
      return absl::UnknownError(absl::StrCat("CouchDB at ", couch.base_url(),
                                             " sent a malformed _all_docs of ", registry));
    }
    const rapidjson::Value& rows = (*page)["rows"];
    for (const rapidjson::Value& row : rows.GetArray()) {
      if (!row.IsObject()) continue;
      if (row.HasMember("id") && row["id"].IsString()) after = couchdb::ToJson(row["id"]);
      if (row.HasMember("doc")) each(row["doc"]);
    }
    if (rows.Size() < static_cast<rapidjson::SizeType>(limit)) return absl::OkStatus();
    if (after.empty()) {
      return absl::UnknownError(absl::StrCat("CouchDB at ", couch.base_url(),
                                             " sent _all_docs rows of ", registry, " without ids"));
    }
  }
}

}  // namespace cnp::client::sync
