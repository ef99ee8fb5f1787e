// JSON requests to one CouchDB server for cnp derive, over common/couchdb's CouchClient (libcurl,
// bounded answers, credentials never in a URL or a message). An answer that is not a success
// becomes a status naming what was being done; of its body only CouchDB's error and reason.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "rapidjson/document.h"
#include "common/couchdb/couch_client.h"

namespace cnp::derive {

class CouchDb {
 public:
  explicit CouchDb(couchdb::CouchClient& http) : http_(http) {}

  absl::StatusOr<rapidjson::Document> Get(const std::string& path, absl::string_view what);
  // A success's body unparsed, for a caller that copes with an answer it cannot parse.
  absl::StatusOr<std::string> GetBody(const std::string& path, absl::string_view what);
  // The first `max_bytes` of a success's body (the rest is not read): enough to see where an
  // answer too long to read whole begins.
  absl::StatusOr<std::string> GetStart(const std::string& path, size_t max_bytes, absl::string_view what);
  // NOT_FOUND (the document or database is missing) is nullopt.
  absl::StatusOr<std::optional<rapidjson::Document>> GetIfExists(const std::string& path,
                                                                 absl::string_view what);
  // A GET that may end in a transport timeout, which is then nullopt (a quiet longpoll).
  absl::StatusOr<std::optional<rapidjson::Document>> GetOrTimeOut(const std::string& path,
                                                                  absl::Duration timeout);
  // With `timeout`, it bounds the request instead of the connection's timeout.
  absl::StatusOr<rapidjson::Document> Post(const std::string& path, absl::string_view json,
                                           absl::string_view what,
                                           std::optional<absl::Duration> timeout = std::nullopt);
  // The same, with the answer's length in `answer_bytes`, for a caller bounding what it holds.
  absl::StatusOr<rapidjson::Document> Post(const std::string& path, absl::string_view json,
                                           absl::string_view what, size_t& answer_bytes);
  // HTTP 409 is ABORTED, so a caller can tell a lost race from a failure.
  absl::StatusOr<rapidjson::Document> Put(const std::string& path, absl::string_view json,
                                          absl::string_view what,
                                          std::optional<absl::Duration> timeout = std::nullopt);
  // DELETE; `path` carries the revision (?rev=).
  absl::StatusOr<rapidjson::Document> Delete(const std::string& path, absl::string_view what,
                                             std::optional<absl::Duration> timeout = std::nullopt);
  // Creates the database unless it exists; an error unless CouchDB says it created one (or
  // that it exists), so that a PUT answered as something else (a document created under a
  // database's URL) is not taken for a database.
  absl::Status EnsureDatabase(absl::string_view database);
  // OK when base_url() is CouchDB's root (what its GET / answers says so, wherever a proxy
  // puts it); INVALID_ARGUMENT saying what to pass instead when it is a database's URL or
  // anything else. Asked before anything is written.
  absl::Status CheckRoot();

  const std::string& base_url() const { return http_.base_url(); }
  int64_t max_response_bytes() const { return http_.max_response_bytes(); }

 private:
  absl::StatusOr<rapidjson::Document> Parse(const absl::StatusOr<couchdb::HttpResponse>& response,
                                            absl::string_view what);

  couchdb::CouchClient& http_;
};

// What lets an instance write under a lease (lease.h): each write request asks it first.
class WriteFence {
 public:
  virtual ~WriteFence() = default;
  // How long a write request starting now may take (its timeout); FAILED_PRECONDITION when
  // none may start (the lease was lost, or its deadline has passed).
  virtual absl::StatusOr<absl::Duration> WriteBudget() = 0;
  // A write request ended without an answer: CouchDB may still apply it.
  virtual void Unanswered() = 0;
};

// "/<db>", "/<db>/_local/<id>" and "/<db>/<id>", escaped.
std::string DbPath(absl::string_view database);
std::string LocalDocPath(absl::string_view database, absl::string_view id);
// A JSON value as a URL query parameter value (startkey="...").
std::string QueryJson(const rapidjson::Value& value);
std::string QueryString(absl::string_view text);

}  // namespace cnp::derive
