// Where cnp upload, sync and derive find the CouchDB user and password, first found wins:
//   1. the URL's "user:password@"
//   2. $CNP_COUCHDB_USER and $CNP_COUCHDB_PASSWORD
//   3. the "machine <host>" (or "default") entry of $NETRC, else ~/.netrc
// The URL is stripped of them: they travel apart (cnp upload: in the request's credentials
// field; sync and derive: to CouchClient as a user name and password).
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cnp::client::couch {

struct CouchCredentials {
  std::string url;       // without user info
  std::string username;  // empty: none found, CouchDB is asked anonymously
  std::string password;
  std::string source;    // where they came from, for messages: "the URL", "$NETRC", ...
};

using GetEnv = std::function<std::optional<std::string>(const char*)>;

// Reads the process environment.
std::optional<std::string> ProcessEnv(const char* name);

absl::StatusOr<CouchCredentials> FindCouchCredentials(absl::string_view url, const GetEnv& env);

// Credentials go over plain http:// only to this host's loopback (common/loopback.h), the rule
// the clients keep for the service's token: to any other host PERMISSION_DENIED, naming the URL
// and the fix (https://, or `insecure`: the command's --insecure), before anything is sent.
// No credentials, or https://, always pass.
absl::Status CheckCredentialsStayPrivate(const CouchCredentials& credentials, bool insecure);

struct NetrcEntry {
  std::string login;
  std::string password;
};

// The entry for `host` in netrc text, or its "default" entry.
std::optional<NetrcEntry> FindNetrcEntry(absl::string_view netrc, absl::string_view host);

}  // namespace cnp::client::couch
