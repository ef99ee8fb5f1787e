// CouchDB server URLs with the credentials taken out, so that what is logged or reported can
// never carry a password.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "absl/status/statusor.h"

namespace cnp::upload {

struct CouchUrl {
  std::string base;      // "scheme://host[:port][/prefix]", no user info, no trailing slash
  std::string username;  // from "user:password@", percent-decoded; empty when absent
  std::string password;
};

// Accepts http:// and https:// URLs, with or without user info.
absl::StatusOr<CouchUrl> ParseCouchUrl(absl::string_view url);

// `url` with any "user:password@" removed; for messages about a URL that may not parse.
std::string RedactUrl(absl::string_view url);

}  // namespace cnp::upload
