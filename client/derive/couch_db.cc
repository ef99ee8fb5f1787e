#include "client/derive/couch_db.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "common/couchdb/couch_root.h"
#include "common/couchdb/json.h"

namespace cnp::derive {

absl::StatusOr<rapidjson::Document> CouchDb::Parse(
    const absl::StatusOr<couchdb::HttpResponse>& response, absl::string_view what) {
  if (!response.ok()) return response.status();
  if (response->status < 200 || response->status > 299) {
    return couchdb::HttpError(*response, what, http_.base_url());
  }
  // Numbers exactly as CouchDB keeps them: a derived document, a join's source document or a
  // reduce group's row may hold an integer past a double's range, to be written back as it is.
  absl::StatusOr<rapidjson::Document> doc = couchdb::ParseJsonExact(response->body);
  if (!doc.ok()) {
    return absl::UnknownError(absl::StrCat(what, " at ", http_.base_url(),
                                           ": the answer is not JSON (", doc.status().message(), ")"));
  }
  return doc;
}

absl::StatusOr<rapidjson::Document> CouchDb::Get(const std::string& path, absl::string_view what) {
  return Parse(http_.Get(path), what);
}

absl::StatusOr<std::string> CouchDb::GetBody(const std::string& path, absl::string_view what) {
  absl::StatusOr<couchdb::HttpResponse> response = http_.Get(path);
  if (!response.ok()) return response.status();
  if (response->status < 200 || response->status > 299) {
    return couchdb::HttpError(*response, what, http_.base_url());
  }
  return std::move(response->body);
}

absl::StatusOr<std::string> CouchDb::GetStart(const std::string& path, size_t max_bytes,
                                              absl::string_view what) {
  std::string start;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);  // a server that stalls midway
  absl::StatusOr<couchdb::HttpResponse> response = http_.GetStreaming(
      path,
      [&](absl::string_view data) {
        start.append(data.data(), std::min(data.size(), max_bytes - start.size()));
        return start.size() < max_bytes;
      },
      [&] { return absl::Now() < deadline; });
  // Ended by us once it had enough: only a success's body reaches the reader. Ended by the
  // deadline with less, it is not the whole answer, and must not pass for one.
  if (absl::IsCancelled(response.status()) && start.size() >= max_bytes) return start;
  if (absl::IsCancelled(response.status()) && absl::Now() >= deadline) {
    return absl::DeadlineExceededError(absl::StrCat(what, " at ", http_.base_url(),
                                                    ": the server stalled for 60 s midway"));
  }
  if (!response.ok()) return response.status();
  if (response->status < 200 || response->status > 299) {
    return couchdb::HttpError(*response, what, http_.base_url());
  }
  return start;
}

absl::StatusOr<std::optional<rapidjson::Document>> CouchDb::GetIfExists(const std::string& path,
                                                                        absl::string_view what) {
  absl::StatusOr<couchdb::HttpResponse> response = http_.Get(path);
  if (response.ok() && response->status == 404) return std::nullopt;
  absl::StatusOr<rapidjson::Document> doc = Parse(response, what);
  if (!doc.ok()) return doc.status();
  return std::optional<rapidjson::Document>(*std::move(doc));
}

absl::StatusOr<std::optional<rapidjson::Document>> CouchDb::GetOrTimeOut(const std::string& path,
                                                                         absl::Duration timeout) {
  absl::StatusOr<couchdb::HttpResponse> response = http_.Get(path, timeout);
  // A server that keeps a quiet longpoll open past its own timeout (pouchdb-server does) ends
  // in our transport timeout: nothing changed.
  if (absl::IsUnavailable(response.status())) return std::nullopt;
  absl::StatusOr<rapidjson::Document> doc = Parse(response, "waiting for changes");
  if (!doc.ok()) return doc.status();
  return std::optional<rapidjson::Document>(*std::move(doc));
}

absl::StatusOr<rapidjson::Document> CouchDb::Post(const std::string& path, absl::string_view json,
                                                  absl::string_view what, std::optional<absl::Duration> timeout) {
  return Parse(timeout ? http_.Post(path, json, *timeout) : http_.Post(path, json), what);
}

absl::StatusOr<rapidjson::Document> CouchDb::Post(const std::string& path, absl::string_view json,
                                                  absl::string_view what, size_t& answer_bytes) {
  absl::StatusOr<couchdb::HttpResponse> response = http_.Post(path, json);
  answer_bytes = response.ok() ? response->body.size() : 0;
  return Parse(response, what);
}

absl::StatusOr<rapidjson::Document> CouchDb::Put(const std::string& path, absl::string_view json,
                                                 absl::string_view what, std::optional<absl::Duration> timeout) {
  return Parse(timeout ? http_.Put(path, json, *timeout) : http_.Put(path, json), what);
}

absl::StatusOr<rapidjson::Document> CouchDb::Delete(const std::string& path, absl::string_view what,
                                                    std::optional<absl::Duration> timeout) {
  return Parse(timeout ? http_.Delete(path, *timeout) : http_.Delete(path), what);
}

absl::Status CouchDb::EnsureDatabase(absl::string_view database) {
  std::string what = absl::StrCat("creating database ", database);
  absl::StatusOr<couchdb::HttpResponse> response = http_.Put(DbPath(database), "");
  if (!response.ok()) return response.status();
  if (response->status == 412) return absl::OkStatus();  // it exists
  absl::StatusOr<rapidjson::Document> answer = Parse(response, what);
  if (!answer.ok()) return answer.status();
  // Only CouchDB's root creates a database with this PUT, answering 201 (or 202: not yet on
  // a quorum of nodes) and {"ok":true}. Under a database's URL the same PUT creates a document
  // (201 {"ok":true,"id":...,"rev":...}); whatever else says 2xx did not create one either.
  const bool ok = answer->IsObject() && answer->HasMember("ok") && (*answer)["ok"].IsTrue();
  const bool document = answer->IsObject() && (answer->HasMember("id") || answer->HasMember("rev"));
  if ((response->status == 201 || response->status == 202) && ok && !document) return absl::OkStatus();
  // Not FAILED_PRECONDITION, which the command takes for a lost lease.
  return absl::UnknownError(absl::StrCat(
      what, " at ", http_.base_url(), ": the answer (HTTP ", response->status, ", ",
      couchdb::ToJson(*answer).substr(0, 200), ") is not CouchDB's for a new database",
      document ? ", but for a new document: the URL is not CouchDB's root" : "",
      "; pass CouchDB's root URL (the one that answers {\"couchdb\":\"Welcome\",...})"));
}

absl::Status CouchDb::CheckRoot() {
  return couchdb::CheckCouchRoot(http_, "DECLARATION.yml names the databases");
}

std::string DbPath(absl::string_view database) { return couchdb::DatabasePath(database); }

std::string LocalDocPath(absl::string_view database, absl::string_view id) {
  return absl::StrCat(DbPath(database), "/_local/", couchdb::CouchClient::EscapeSegment(id));
}

std::string QueryJson(const rapidjson::Value& value) {
  return couchdb::CouchClient::EscapeSegment(couchdb::ToJson(value));
}

std::string QueryString(absl::string_view text) {
  rapidjson::Value value(rapidjson::StringRef(text.data(), text.size()));
  return QueryJson(value);
}

}  // namespace cnp::derive
