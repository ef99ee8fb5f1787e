#include "service/upload/couch_client.h"

#include <curl/curl.h>

#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "rapidjson/document.h"

namespace cnp::upload {
namespace {

// Called by libcurl (C): nothing may escape. Returning less than it was given makes curl fail
// the transfer, which is the right outcome when the body does not fit in memory.
size_t AppendToString(char* data, size_t size, size_t count, void* target) noexcept {
  try {
    static_cast<std::string*>(target)->append(data, size * count);
    return size * count;
  } catch (...) {
    return 0;
  }
}

void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// CouchDB's {"error": ..., "reason": ...}, or the start of whatever else came back.
std::string Reason(const HttpResponse& response) {
  rapidjson::Document doc;
  doc.Parse(response.body.c_str());
  if (!doc.HasParseError() && doc.IsObject()) {
    std::string out;
    if (doc.HasMember("error") && doc["error"].IsString()) out = doc["error"].GetString();
    if (doc.HasMember("reason") && doc["reason"].IsString()) {
      absl::StrAppend(&out, out.empty() ? "" : ": ", doc["reason"].GetString());
    }
    if (!out.empty()) return out;
  }
  return response.body.substr(0, 200);
}

}  // namespace

CouchClient::CouchClient(Options options) : options_(std::move(options)) {
  InitCurlOnce();
  curl_ = curl_easy_init();
}

CouchClient::~CouchClient() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

std::string CouchClient::EscapeSegment(absl::string_view segment) {
  std::string out;
  for (unsigned char c : segment) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '$' ||
        c == '(' || c == ')' || c == '+') {
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
  return Perform("GET", path, nullptr, true);
}

absl::StatusOr<HttpResponse> CouchClient::GetWithoutTimeout(absl::string_view path) {
  return Perform("GET", path, nullptr, false);
}

absl::StatusOr<HttpResponse> CouchClient::Put(absl::string_view path, absl::string_view json) {
  return Perform("PUT", path, &json, true);
}

absl::StatusOr<HttpResponse> CouchClient::Delete(absl::string_view path) {
  return Perform("DELETE", path, nullptr, true);
}

absl::StatusOr<HttpResponse> CouchClient::Perform(const char* method, absl::string_view path,
                                                  const absl::string_view* body,
                                                  bool with_timeout) {
  CURL* curl = static_cast<CURL*>(curl_);
  if (curl == nullptr) return absl::InternalError("libcurl could not be initialised");
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
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendToString);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response.body);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // safe in a multi-threaded server
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  if (with_timeout) {
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(absl::ToInt64Milliseconds(options_.timeout)));
  }
  if (!options_.username.empty()) {
    curl_easy_setopt(curl, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(curl, CURLOPT_USERNAME, options_.username.c_str());
    curl_easy_setopt(curl, CURLOPT_PASSWORD, options_.password.c_str());
  }
  if (!options_.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, options_.ca_file.c_str());
  if (body != nullptr) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body->data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
  }

  CURLcode code = curl_easy_perform(curl);
  curl_slist_free_all(headers);
  if (code != CURLE_OK) {
    std::string detail = error[0] != '\0' ? error : curl_easy_strerror(code);
    return absl::UnavailableError(absl::StrCat("cannot reach CouchDB at ", options_.base_url,
                                               ": ", detail,
                                               " (is CouchDB running, and is the URL right?)"));
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

std::string DatabasePath(absl::string_view database) {
  return absl::StrCat("/", CouchClient::EscapeSegment(database));
}

std::string DesignDocPath(absl::string_view database, absl::string_view name) {
  return absl::StrCat(DatabasePath(database), "/_design/", CouchClient::EscapeSegment(name));
}

absl::Status HttpError(const HttpResponse& response, absl::string_view what,
                       absl::string_view base_url) {
  std::string reason = Reason(response);
  std::string context = absl::StrCat(what, " at ", base_url);
  switch (response.status) {
    case 401:
      return absl::UnauthenticatedError(absl::StrCat(
          context, ": CouchDB refused the credentials (", reason,
          "); check the user name and password (in the URL, CNP_COUCHDB_USER and "
          "CNP_COUCHDB_PASSWORD, or ~/.netrc)"));
    case 403:
      return absl::PermissionDeniedError(absl::StrCat(
          context, ": not allowed (", reason,
          "); writing design documents needs a database or server admin"));
    case 404:
      return absl::NotFoundError(absl::StrCat(context, ": not found (", reason, ")"));
    case 409:
      return absl::AbortedError(absl::StrCat(context, ": conflict (", reason, ")"));
    default:
      return absl::UnknownError(
          absl::StrCat(context, ": CouchDB answered HTTP ", response.status, " (", reason, ")"));
  }
}

}  // namespace cnp::upload
