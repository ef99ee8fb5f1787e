// What the CLI commands that talk to CouchDB themselves (cnp sync, cnp derive, cnp upload
// --register --remove) need to reach it: the credentials found for COUCHDB_URL
// (couch_credentials.h), its base URL, and the CA certificates of --ca-file (common/pem_file.h),
// as CouchClient's options. One function, so that they refuse the same things alike.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/couch/couch_credentials.h"
#include "common/couchdb/couch_client.h"

namespace cnp::client::couch {

// Fails with a message fit for the user (credentials redacted) when the credentials, the URL or
// the CA file cannot be used. An empty `ca_file` means the system's CA store.
// Credentials for an http:// CouchDB off this host are refused unless `insecure`
// (CheckCredentialsStayPrivate).
absl::StatusOr<cnp::couchdb::CouchClient::Options> CouchClientOptionsFor(
    absl::string_view couchdb_url, const std::string& ca_file, bool insecure, const GetEnv& env);

}  // namespace cnp::client::couch
