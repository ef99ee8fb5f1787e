#include "service/upload/couch_allow_list.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/loopback.h"

namespace cnp::upload {
namespace {

// "http://Host:5984/Path" -> "http://host:5984/Path": scheme and host compare without case.
std::string Normalised(const std::string& base) {
  size_t host = base.find("://") + 3;
  size_t path = base.find('/', host);
  if (path == std::string::npos) path = base.size();
  return absl::StrCat(absl::AsciiStrToLower(absl::string_view(base).substr(0, path)),
                      absl::string_view(base).substr(path));
}

// The host of "scheme://host[:port][/path]": "[::1]" with its brackets, as common/loopback.h
// reads it.
std::string HostOf(const std::string& base) {
  absl::string_view rest = base;
  rest.remove_prefix(base.find("://") + 3);
  rest = rest.substr(0, rest.find('/'));
  if (absl::StartsWith(rest, "[")) return std::string(rest.substr(0, rest.find(']') + 1));
  return std::string(rest.substr(0, rest.find(':')));
}

}  // namespace

bool IsLoopbackUrl(const couchdb::CouchUrl& url) { return IsLoopbackHost(HostOf(url.base)); }

absl::StatusOr<CouchAllowList> CouchAllowList::FromPrefixes(
    const std::vector<std::string>& prefixes) {
  CouchAllowList list;
  for (const std::string& prefix : prefixes) {
    if (prefix == "*") {
      list.any_ = true;
      continue;
    }
    absl::StatusOr<couchdb::CouchUrl> url = couchdb::ParseCouchUrl(prefix);
    if (!url.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--couchdb-allow: ", url.status().message()));
    }
    if (!url->username.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--couchdb-allow=", couchdb::RedactUrl(prefix),
          ": give the URL without user:password@ (callers bring their own credentials)"));
    }
    list.prefixes_.push_back(Normalised(url->base));
  }
  return list;
}

absl::Status CouchAllowList::Check(const couchdb::CouchUrl& url) const {
  if (any_) return absl::OkStatus();
  if (prefixes_.empty()) {
    if (IsLoopbackUrl(url)) return absl::OkStatus();
    return absl::PermissionDeniedError(absl::StrCat(
        "this cnp-server uploads only to CouchDB on its own host (localhost, 127.0.0.0/8, "
        "[::1], [::ffff:127.x.x.x]), not to ", url.base,
        "; its operator can allow more with --couchdb-allow=URL_PREFIX"));
  }
  if (UnderAPrefix(url)) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat("this cnp-server does not upload to ", url.base,
                   ": it is not under any URL its operator allowed with --couchdb-allow"));
}

absl::Status CouchAllowList::CheckCredentialsMayGo(const couchdb::CouchUrl& url) const {
  if (!absl::StartsWithIgnoreCase(url.base, "http://") || IsLoopbackUrl(url) ||
      UnderAPrefix(url)) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "this cnp-server does not send CouchDB credentials in plain text to ", url.base,
      ": use https://, or its operator can allow plain HTTP to that server by naming it, "
      "--couchdb-allow=", url.base, " (--couchdb-allow=* allows the server, not the password "
      "in clear)"));
}

bool CouchAllowList::UnderAPrefix(const couchdb::CouchUrl& url) const {
  const std::string base = Normalised(url.base);
  for (const std::string& prefix : prefixes_) {
    // A prefix ends at a path boundary: http://couch must not allow http://couch.evil.com.
    if (base == prefix || absl::StartsWith(base, absl::StrCat(prefix, "/"))) return true;
  }
  return false;
}

}  // namespace cnp::upload
