#include "common/couchdb/couch_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "rapidjson/document.h"
#include "common/couchdb/json.h"
#include "common/utf8_text.h"
#include "common/couchdb/json_value_count.h"

namespace cnp::couchdb {
namespace {

constexpr size_t kMaxReasonBytes = 200;

struct BodySink {
  std::string* body;
  size_t max_bytes;
  int64_t max_values;
  bool too_long = false;
  bool too_dense = false;
  JsonValueCount values;
};

// libcurl asks about once a second, and more often while data flows.
int AbortWhenStopped(void* stop, curl_off_t, curl_off_t, curl_off_t, curl_off_t) noexcept {
  return static_cast<const std::stop_token*>(stop)->stop_requested() ? 1 : 0;
}

// A streamed answer: a success's body goes to the reader, an error's is kept (bounded).
struct StreamSink {
  CURL* curl;
  const std::function<bool(absl::string_view)>* on_data;
  const std::function<bool()>* keep_going;
  const std::stop_token* stop;
  BodySink error_body;
};

int AbortStreamWhenDone(void* target, curl_off_t, curl_off_t, curl_off_t, curl_off_t) noexcept {
  auto* sink = static_cast<StreamSink*>(target);
  if (sink->stop->stop_requested()) return 1;
  try {
    return (*sink->keep_going)() ? 0 : 1;
  } catch (...) {
    return 1;
  }
}

// The client serves cnp-server's uploads as well as cnp sync and derive: the message names
// neither alone.
absl::Status Stopped() {
  return absl::CancelledError(
      "the request to CouchDB was stopped because the work it was for was cancelled (an upload "
      "whose client went away, whose deadline passed or whose server is shutting down, or a cnp "
      "sync or derive that is stopping)");
}

size_t AppendToBody(char* data, size_t size, size_t count, void* target) noexcept {
  auto* sink = static_cast<BodySink*>(target);
  const size_t bytes = size * count;
  if (bytes > sink->max_bytes - sink->body->size()) {
    sink->too_long = true;
    return 0;
  }
  sink->values.Add(absl::string_view(data, bytes));
  if (sink->values.values() > sink->max_values) {
    sink->too_dense = true;
    return 0;
  }
  try {
    sink->body->append(data, bytes);
    return bytes;
  } catch (...) {
    return 0;
  }
}

// At most `max` bytes of `text`, cut at a UTF-8 character boundary, with control characters
// (a terminal's escape sequences) replaced by spaces.
std::string Trimmed(absl::string_view text, size_t max) {
  std::string out;
  const size_t end = Utf8Prefix(text, max).size();
  for (char c : text.substr(0, end)) {
    out.push_back(static_cast<unsigned char>(c) < 0x20 || c == 0x7F ? ' ' : c);
  }
  if (end < text.size()) out += "...";
  return out;
}

void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// Called by libcurl (C): nothing may escape, as with AppendToBody.
size_t StreamToReader(char* data, size_t size, size_t count, void* target) noexcept {
  auto* sink = static_cast<StreamSink*>(target);
  long status = 0;
  curl_easy_getinfo(sink->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status > 299) return AppendToBody(data, size, count, &sink->error_body);
  const size_t bytes = size * count;
  try {
    if (!(*sink->on_data)(absl::string_view(data, bytes))) return 0;
    return (*sink->keep_going)() ? bytes : 0;
  } catch (...) {
    return 0;
  }
}

// A request's path for a message: without its query (which may be long, and holds nothing the
// reader needs) and at most 200 bytes.
std::string ShortPath(absl::string_view path) {
  path = path.substr(0, path.find('?'));
  return path.size() <= 200 ? std::string(path) : absl::StrCat(path.substr(0, 200), "...");
}

// A request that changes nothing, which may be sent again: GET and HEAD, and the POSTs that
// only read (a query in the body: _find, _all_docs and _bulk_get with keys, _changes with
// doc_ids, _explain), which cnp derive makes hundreds of a second.
bool ReadsOnly(absl::string_view method, absl::string_view path) {
  if (method == "GET" || method == "HEAD") return true;
  if (method != "POST") return false;
  const absl::string_view resource = path.substr(0, path.find('?'));
  for (const absl::string_view reader : {"/_find", "/_all_docs", "/_bulk_get", "/_changes",
                                         "/_explain"}) {
    if (absl::EndsWith(resource, reader)) return true;
  }
  return false;
}

}  // namespace

CouchClient::CouchClient(Options options) : options_(std::move(options)) {
  InitCurlOnce();
  curl_ = curl_easy_init();
}

CouchClient::~CouchClient() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

std::string CouchClient::EscapeSegment(absl::string_view segment) {
  // "." and ".." are escaped whole: libcurl (and any proxy) would otherwise resolve them as
  // path steps, and "/db/_design/.." would reach "/db".
  // "+" is escaped too: CouchDB 3.2 and later read it in a path as a space
  // ([chttpd] decode_plus_to_space), so "account/a+b" would reach "account/a b".
  const bool dots_only = segment == "." || segment == "..";
  std::string out;
  for (unsigned char c : segment) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || (c == '.' && !dots_only) || c == '~' ||
        c == '$' || c == '(' || c == ')') {
      out.push_back(static_cast<char>(c));
    } else {
      constexpr char kHex[] = "0123456789ABCDEF";
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

absl::StatusOr<HttpResponse> CouchClient::Get(absl::string_view path) {
  return Perform("GET", path, nullptr, true, options_.timeout);
}

absl::StatusOr<HttpResponse> CouchClient::Get(absl::string_view path, absl::Duration timeout) {
  // Under a millisecond, libcurl would read 0 as no timeout at all.
  return Perform("GET", path, nullptr, true, std::max(timeout, absl::Milliseconds(1)));
}

absl::StatusOr<HttpResponse> CouchClient::GetStreaming(
    absl::string_view path, const std::function<bool(absl::string_view)>& on_data,
    const std::function<bool()>& keep_going) {
  Streaming streaming{&on_data, &keep_going};
  return Perform("GET", path, nullptr, false, options_.timeout, &streaming);
}

absl::StatusOr<HttpResponse> CouchClient::Put(absl::string_view path, absl::string_view json) {
  return Perform("PUT", path, &json, true, options_.timeout);
}

absl::StatusOr<HttpResponse> CouchClient::Post(absl::string_view path, absl::string_view json) {
  return Perform("POST", path, &json, true, options_.timeout);
}

absl::StatusOr<HttpResponse> CouchClient::Delete(absl::string_view path) {
  return Perform("DELETE", path, nullptr, true, options_.timeout);
}

absl::StatusOr<HttpResponse> CouchClient::Put(absl::string_view path, absl::string_view json,
                                              absl::Duration timeout) {
  return Perform("PUT", path, &json, true, std::max(timeout, absl::Milliseconds(1)));
}

absl::StatusOr<HttpResponse> CouchClient::Post(absl::string_view path, absl::string_view json,
                                               absl::Duration timeout) {
  return Perform("POST", path, &json, true, std::max(timeout, absl::Milliseconds(1)));
}

absl::StatusOr<HttpResponse> CouchClient::Delete(absl::string_view path, absl::Duration timeout) {
  return Perform("DELETE", path, nullptr, true, std::max(timeout, absl::Milliseconds(1)));
}

absl::StatusOr<HttpResponse> CouchClient::Perform(const char* method, absl::string_view path,
                                                  const absl::string_view* body,
                                                  bool with_timeout,
                                                  absl::Duration timeout,
                                                  const Streaming* streaming) {
  CURL* curl = static_cast<CURL*>(curl_);
  if (curl == nullptr) return absl::InternalError("libcurl could not be initialised");
  if (options_.stop.stop_requested()) return Stopped();
  curl_easy_reset(curl);  // keeps the connection cache

  std::string url = absl::StrCat(options_.base_url, path);
  HttpResponse response;
  char error[CURL_ERROR_SIZE] = {0};
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "Accept: application/json");
  if (body != nullptr) headers = curl_slist_append(headers, "Content-Type: application/json");

  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  BodySink sink{&response.body, static_cast<size_t>(std::max<int64_t>(0, options_.max_response_bytes)),
                MaxJsonValuesFor(options_.max_response_bytes)};
  StreamSink stream{curl, nullptr, nullptr, &options_.stop, sink};
  if (streaming != nullptr) {
    stream.on_data = streaming->on_data;
    stream.keep_going = streaming->keep_going;
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, StreamToReader);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &stream);
  } else {
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendToBody);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  }
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // safe in a multi-threaded server
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  // A redirect could lead anywhere, past the operator's --couchdb-allow: CouchDB sends none.
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  // A request without a timeout (a staged build's view query may run for hours) must still
  // find out that the host went away: TCP keepalive probes an idle connection.
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPIDLE, 60L);
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPINTVL, 15L);
  if (with_timeout) {
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(absl::ToInt64Milliseconds(timeout)));
  }
  response.sent_credentials = !options_.username.empty();
  response.method = method;
  response.path = std::string(path);
  if (!options_.username.empty()) {
    curl_easy_setopt(curl, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(curl, CURLOPT_USERNAME, options_.username.c_str());
    curl_easy_setopt(curl, CURLOPT_PASSWORD, options_.password.c_str());
  }
  if (!options_.ca_pem.empty()) {
    curl_blob ca{const_cast<char*>(options_.ca_pem.data()), options_.ca_pem.size(),
                 CURL_BLOB_COPY};
    curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &ca);
  }
  if (!ReadsOnly(method, path)) {
    // libcurl sends a request again, on a new connection, when a connection it reused breaks
    // before any answer (an idle one CouchDB closed). For a write that may have been applied
    // all the same (the server applied it, then went away): the second write conflicted with
    // the first, and cnp upload reported its own update as someone else's edit (a data-safety
    // probe). A write goes on a new connection, which libcurl never sends again: its lost
    // answer is an error saying it may have been applied (kWriteWithoutAnswer).
    curl_easy_setopt(curl, CURLOPT_FRESH_CONNECT, 1L);
  }
  if (body != nullptr) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body->data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
  }

  if (streaming != nullptr) {
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, AbortStreamWhenDone);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &stream);
  } else if (options_.stop.stop_possible()) {
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, AbortWhenStopped);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &options_.stop);
  }

  CURLcode code = curl_easy_perform(curl);
  curl_slist_free_all(headers);
  if (streaming != nullptr) {
    sink.too_long = stream.error_body.too_long;
    sink.too_dense = stream.error_body.too_dense;
    if (!sink.too_long && !sink.too_dense && (code == CURLE_ABORTED_BY_CALLBACK || code == CURLE_WRITE_ERROR)) {
      if (options_.stop.stop_requested()) return Stopped();
      return absl::CancelledError("the reader ended the stream");
    }
  }
  if (code == CURLE_ABORTED_BY_CALLBACK) {
    // Cut off once sent, a write may have been applied: only CouchDB can say.
    absl::Status stopped = Stopped();
    if (!ReadsOnly(method, path)) {
      stopped.SetPayload(kWriteWithoutAnswer, absl::Cord(method));
    }
    return stopped;
  }
  if (sink.too_long) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "CouchDB's answer from ", options_.base_url, " exceeded ", sink.max_bytes,
        " bytes and was cut off (is the URL really CouchDB's?",
        options_.response_limit_advice.empty() ? "" : " ", options_.response_limit_advice, ")"));
  }
  if (sink.too_dense) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "CouchDB's answer from ", options_.base_url, " (", method, " ", ShortPath(path),
        ") holds more than ", sink.max_values, " JSON values, at most one per 16 bytes of the ",
        sink.max_bytes, "-byte answer limit: text that dense takes many times its size in memory "
        "once read, so it was not (is the URL really CouchDB's?",
        options_.response_limit_advice.empty() ? "" : " ", options_.response_limit_advice, ")"));
  }
  if (code != CURLE_OK) {
    std::string detail = error[0] != '\0' ? error : curl_easy_strerror(code);
    // Which request: a connection that was accepted and then failed mid-answer is another
    // matter than one that was never made.
    const std::string request = absl::StrCat(method, " ", ShortPath(path));
    absl::Status failed;
    if (code == CURLE_OPERATION_TIMEDOUT && with_timeout) {
      // Often a CouchDB that answered the request before this one: asking whether it runs
      // at that URL sent users looking in the wrong place.
      failed = absl::UnavailableError(absl::StrCat(
          "CouchDB at ", options_.base_url, " did not answer ", request, " within ",
          absl::FormatDuration(timeout), ", the time given to each request (", detail, ")"));
    } else {
      failed = absl::UnavailableError(absl::StrCat("cannot reach CouchDB at ", options_.base_url,
                                                   " (", request, "): ", detail,
                                                   " (is CouchDB running, and is the URL right?)"));
    }
    failed.SetPayload(kNoAnswer, absl::Cord(method));
    if (!ReadsOnly(method, path)) {
      failed.SetPayload(kWriteWithoutAnswer, absl::Cord(method));
    }
    return failed;
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

bool MayHaveBeenApplied(const absl::Status& status) {
  return status.GetPayload(kWriteWithoutAnswer).has_value();
}

std::string DatabasePath(absl::string_view database) {
  return absl::StrCat("/", CouchClient::EscapeSegment(database));
}

std::string DesignDocPath(absl::string_view database, absl::string_view name) {
  return absl::StrCat(DatabasePath(database), "/_design/", CouchClient::EscapeSegment(name));
}

std::string Reason(const HttpResponse& response) {
  absl::StatusOr<rapidjson::Document> doc = ParseJson(response.body);
  if (doc.ok() && doc->IsObject()) {
    std::string out;
    auto field = [&](const char* name) -> absl::string_view {
      auto it = doc->FindMember(name);
      if (it == doc->MemberEnd() || !it->value.IsString()) return "";
      return absl::string_view(it->value.GetString(), it->value.GetStringLength());
    };
    out = Trimmed(field("error"), kMaxReasonBytes);
    absl::string_view reason = field("reason");
    if (!reason.empty()) {
      absl::StrAppend(&out, out.empty() ? "" : ": ", Trimmed(reason, kMaxReasonBytes));
    }
    if (!out.empty()) return out;
  }
  return absl::StrCat("an answer of ", response.body.size(),
                      " bytes without CouchDB's error and reason, not shown");
}

namespace {

// A percent-escaped path segment as text (a database's name: "a%2Fb" is a/b).
std::string Unescaped(absl::string_view segment) {
  std::string out;
  for (size_t i = 0; i < segment.size(); ++i) {
    int value = 0;
    if (segment[i] == '%' && i + 2 < segment.size() &&
        absl::SimpleHexAtoi(segment.substr(i + 1, 2), &value)) {
      out.push_back(static_cast<char>(value));
      i += 2;
    } else {
      out.push_back(segment[i]);
    }
  }
  return out;
}

// What a 403 means for the request it answered. Writing a design document (cnp upload's and
// sync's case, and a Mango index, which is one: derive's POST /db/_index) or a database's
// security needs a database admin, creating a database a server admin; a 403 to anything else
// (cnp derive reading _changes, writing with _bulk_docs or asking _find) is the database's own
// security (its members, a validate_doc_update that refuses the user) or a server endpoint's.
std::string ForbiddenAdvice(const HttpResponse& response) {
  absl::string_view path = response.path;
  path = path.substr(0, path.find('?'));
  if (path.size() < 2 || path[0] != '/') return "the user lacks permission for this request";
  // "/<db>/...": the database's name is one escaped segment.
  const size_t second = path.find('/', 1);
  const absl::string_view first =
      path.substr(1, second == absl::string_view::npos ? path.npos : second - 1);
  const bool writes = response.method != "GET" && response.method != "HEAD";
  if (writes && second != absl::string_view::npos) {
    absl::string_view rest = path.substr(second);
    if (absl::StartsWith(rest, "/_design/") || absl::StartsWithIgnoreCase(rest, "/_design%2F")) {
      return "writing design documents needs a database or server admin";
    }
    if (rest == "/_index" || absl::StartsWith(rest, "/_index/")) {
      return "a Mango index is a design document: writing one needs a database or server admin";
    }
    if (rest == "/_security") return "changing a database's security needs a database admin";
  }
  if (absl::StartsWith(first, "_")) {  // a server's endpoint (/_db_updates, /_all_dbs)
    return absl::StrCat("the user lacks permission for ", response.method, " ", path);
  }
  const bool names_only_a_database =
      second == absl::string_view::npos || second + 1 == path.size();
  if (response.method == "PUT" && names_only_a_database) {
    return absl::StrCat("creating database ", Unescaped(first), " needs a server admin");
  }
  return absl::StrCat("the user lacks permission for database ", Unescaped(first), " (",
                      response.method, " ", path, ")");
}

// HttpError's status and message, without its payload.
absl::Status HttpErrorOf(const HttpResponse& response, absl::string_view what,
                         absl::string_view base_url) {
  std::string reason = Reason(response);
  std::string context = absl::StrCat(what, " at ", base_url);
  switch (response.status) {
    case 401:
      if (!response.sent_credentials) {
        return absl::UnauthenticatedError(absl::StrCat(
            context, ": CouchDB wants credentials and none were given (", reason,
            "); give a user name and password in the URL, in CNP_COUCHDB_USER and "
            "CNP_COUCHDB_PASSWORD, or in $NETRC or ~/.netrc"));
      }
      return absl::UnauthenticatedError(absl::StrCat(
          context, ": CouchDB refused the credentials (", reason,
          "); check the user name and password (in the URL, CNP_COUCHDB_USER and "
          "CNP_COUCHDB_PASSWORD, or $NETRC or ~/.netrc)"));
    case 403:
      return absl::PermissionDeniedError(absl::StrCat(
          context, ": not allowed (", reason, "); ", ForbiddenAdvice(response)));
    case 404:
      return absl::NotFoundError(absl::StrCat(context, ": not found (", reason, ")"));
    case 409:
      return absl::AbortedError(absl::StrCat(context, ": conflict (", reason, ")"));
    case 413:
      return absl::UnknownError(absl::StrCat(
          context, ": refused as too large, HTTP 413 (", reason,
          "); CouchDB's max_document_size or max_http_request_size, or a proxy's body limit"));
    default:
      if (response.status >= 300 && response.status < 400) {
        // Followed, it could send the credentials anywhere; CouchDB itself sends none.
        return absl::UnknownError(absl::StrCat(
            context, ": answered HTTP ", response.status, ", a redirect, which cnp does not "
            "follow (it could lead the credentials anywhere): give the URL of CouchDB itself"));
      }
      return absl::UnknownError(
          absl::StrCat(context, ": CouchDB answered HTTP ", response.status, " (", reason, ")"));
  }
}

}  // namespace

absl::Status HttpError(const HttpResponse& response, absl::string_view what,
                       absl::string_view base_url) {
  absl::Status status = HttpErrorOf(response, what, base_url);
  status.SetPayload(kHttpStatus, absl::Cord(absl::StrCat(response.status)));
  return status;
}

std::optional<int> HttpStatusOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kHttpStatus);
  int code = 0;
  if (!payload.has_value() || !absl::SimpleAtoi(std::string(*payload), &code)) return std::nullopt;
  return code;
}

bool IsRequestTooLarge(const absl::Status& status) { return HttpStatusOf(status) == 413; }

bool IsCouchDbUnavailable(const absl::Status& status) {
  if (status.GetPayload(kNoAnswer).has_value()) return true;
  const std::optional<int> http = HttpStatusOf(status);
  return http.has_value() && *http >= 500 && *http <= 599;
}

}  // namespace cnp::couchdb
