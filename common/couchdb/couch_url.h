// CouchDB server URLs with the credentials taken out, so that what is logged or reported can
// never carry a password.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "absl/status/statusor.h"

namespace cnp::couchdb {

struct CouchUrl {
  std::string base;      // "scheme://host[:port][/prefix]", no user info, no trailing slash
  std::string username;  // from "user:password@", percent-decoded; empty when absent
  std::string password;
};

// Accepts http:// and https:// URLs, with or without user info. The user info runs to the last
// '@' of the URL, so a password may hold an unencoded '/', '?', '#' or '@'.
absl::StatusOr<CouchUrl> ParseCouchUrl(absl::string_view url);

// `url` with any "user:password@" removed; for messages about a URL that may not parse.
std::string RedactUrl(absl::string_view url);

// `text` (a message, a log line) with the user info of every URL in it removed: after each
// "://", everything up to the last '@' before the next whitespace goes, so that a password with
// an unencoded '/', '?', '#' or '@' is removed whole. Errs on the side of removing too much.
//   "cannot reach http://admin:se/cret@db:5984: refused" -> "cannot reach http://db:5984: refused"
std::string RedactCredentials(absl::string_view text);

}  // namespace cnp::couchdb
