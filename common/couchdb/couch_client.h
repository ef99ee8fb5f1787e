// A small blocking HTTP client for CouchDB's document API, over libcurl (TLS included).
// Credentials go to curl as a user name and password, never into a URL, so no message built
// from a URL or a curl error can contain them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stop_token>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cnp::couchdb {

struct HttpResponse {
  long status = 0;
  std::string body;
  // Whether the request carried a user name and password: a 401 then means they are wrong,
  // else that CouchDB wants some (HttpError says which).
  bool sent_credentials = false;
  // The request answered ("PUT", "/db/_design/x?rev=1-a", escaped as sent): HttpError says
  // what a 403 means for it. Empty for a response built otherwise.
  std::string method;
  std::string path;
};

class CouchClient {
 public:
  struct Options {
    std::string base_url;  // without user info, e.g. "https://couch:6984"
    std::string username;  // empty: no authentication
    std::string password;
    std::string ca_pem;    // CA certificates as PEM text; empty: the system's CA store
    absl::Duration timeout = absl::Seconds(60);
    // A longer answer is cut off and the request fails with RESOURCE_EXHAUSTED: a server that
    // is not CouchDB must not be able to fill the service's memory. So is one that holds more
    // JSON values than one per 16 bytes of this limit (json_value_count.h): dense text such as
    // `[0,0,...]` takes 24 times its size once parsed.
    int64_t max_response_bytes = int64_t{64} << 20;
    // How the user of the program that hit max_response_bytes can raise it, for that message
    // (e.g. "the operator can raise cnp-server's --max-couchdb-response-bytes"): the client is
    // shared by programs with settings of their own. Empty: the message names no setting.
    std::string response_limit_advice;
    // Once a stop is requested (by cnp-server's uploader: its Upload call was cancelled), a
    // request in progress is
    // aborted within about a second and every request fails CANCELLED.
    std::stop_token stop;
  };

  explicit CouchClient(Options options);
  ~CouchClient();
  CouchClient(const CouchClient&) = delete;
  CouchClient& operator=(const CouchClient&) = delete;

  // `path` starts with "/" and is already escaped (see EscapeSegment). A status other than
  // OK means no HTTP answer came back (refused, timed out, TLS failure): UNAVAILABLE with a
  // message saying which server could not be reached; or an answer longer than
  // max_response_bytes, or denser: RESOURCE_EXHAUSTED; or a stop was requested: CANCELLED. Redirects are
  // not followed.
  absl::StatusOr<HttpResponse> Get(absl::string_view path);
  absl::StatusOr<HttpResponse> Put(absl::string_view path, absl::string_view json);
  absl::StatusOr<HttpResponse> Delete(absl::string_view path);
  absl::StatusOr<HttpResponse> Post(absl::string_view path, absl::string_view json);
  // A GET bounded by `timeout` instead of Options::timeout (a _changes longpoll).
  absl::StatusOr<HttpResponse> Get(absl::string_view path, absl::Duration timeout);
  // Writes bounded by `timeout` instead of Options::timeout (a write that must end before a
  // lease does), at least a millisecond (libcurl takes 0 for none).
  absl::StatusOr<HttpResponse> Put(absl::string_view path, absl::string_view json, absl::Duration timeout);
  absl::StatusOr<HttpResponse> Post(absl::string_view path, absl::string_view json, absl::Duration timeout);
  absl::StatusOr<HttpResponse> Delete(absl::string_view path, absl::Duration timeout);
  // A GET whose body, if the answer is a success, goes to `on_data` as it arrives instead of
  // into the response (a continuous _changes feed, which never ends by itself); an error
  // answer's body is kept in the response as usual. There is no overall timeout: the transfer
  // ends when the server ends it, or CANCELLED when `on_data` returns false or `keep_going`
  // does (it is asked whenever data arrives, and about once a second while none does).
  absl::StatusOr<HttpResponse> GetStreaming(absl::string_view path,
                                            const std::function<bool(absl::string_view)>& on_data,
                                            const std::function<bool()>& keep_going);

  const std::string& base_url() const { return options_.base_url; }
  int64_t max_response_bytes() const { return options_.max_response_bytes; }
  const std::stop_token& stop() const { return options_.stop; }

  // Percent-encodes one path segment ("a/b" -> "a%2Fb"): database names may contain '/'.
  static std::string EscapeSegment(absl::string_view segment);

 private:
  struct Streaming {
    const std::function<bool(absl::string_view)>* on_data;
    const std::function<bool()>* keep_going;
  };
  absl::StatusOr<HttpResponse> Perform(const char* method, absl::string_view path,
                                       const absl::string_view* body, bool with_timeout,
                                       absl::Duration timeout,
                                       const Streaming* streaming = nullptr);

  Options options_;
  void* curl_;  // CURL*, reused so that requests share one keep-alive connection
};

// Whether `status` is a CouchClient's for a request that writes (PUT, POST, DELETE) and got no
// answer (cut off, timed out, or stopped once under way): CouchDB may have applied it, and only
// CouchDB can say. A read that failed so wrote nothing, and neither did a write refused before
// it was sent (a stop requested earlier).
bool MayHaveBeenApplied(const absl::Status& status);
// The payload that marks such a status (its value: the method).
inline constexpr absl::string_view kWriteWithoutAnswer = "cnp.couchdb/write-without-answer";

// Whether `status` says CouchDB did not serve a request for a while, as while it restarts: a
// CouchClient's for a request that got no answer (refused, cut off, timed out; its payload
// kNoAnswer), or HttpError's for an HTTP 5xx (a node starting, a proxy's 502/503/504). A
// process that follows CouchDB waits such a failure out; an answer that says no (4xx) it does not.
bool IsCouchDbUnavailable(const absl::Status& status);
inline constexpr absl::string_view kNoAnswer = "cnp.couchdb/no-answer";

// "/<db>" and "/<db>/_design/<name>", escaped.
std::string DatabasePath(absl::string_view database);
std::string DesignDocPath(absl::string_view database, absl::string_view name);

// The status for an HTTP answer that was not the expected success, with a message a user can
// act on: 401 wrong credentials, 403 not allowed, 404 missing, and so on. `what` says what
// was being done, e.g. "reading _design/x from mydb". Of the body only CouchDB's own "error"
// and "reason" are shown, trimmed and stripped of control characters: whatever else a server
// answered is not passed on to the caller.
absl::Status HttpError(const HttpResponse& response, absl::string_view what,
                       absl::string_view base_url);
// The HTTP status of an error HttpError made (its payload kHttpStatus), unset for any other:
// what the status code alone cannot tell (a 400 from a 502, both UNKNOWN).
std::optional<int> HttpStatusOf(const absl::Status& status);
inline constexpr absl::string_view kHttpStatus = "cnp.couchdb/http-status";
// Whether `status` is HttpError's for HTTP 413: the request was refused whole as too large
// (CouchDB 3 answers so a _bulk_docs holding one document past max_document_size, a proxy a
// body past its limit). Smaller requests may pass.
bool IsRequestTooLarge(const absl::Status& status);

// What CouchDB said in an error answer, as HttpError shows it: its "error" and "reason", each
// at most 200 bytes (cut at a UTF-8 character boundary) with control characters made spaces,
// joined as "error: reason"; or, when the body holds neither, only its size ("an answer of N
// bytes without CouchDB's error and reason, not shown"): nothing else of a body that may not
// come from CouchDB at all is passed on.
std::string Reason(const HttpResponse& response);

}  // namespace cnp::couchdb
