#include "client/couch/couch_connection.h"

#include <utility>

#include "common/couchdb/couch_url.h"
#include "common/pem_file.h"

namespace cnp::client::couch {

absl::StatusOr<cnp::couchdb::CouchClient::Options> CouchClientOptionsFor(
    absl::string_view couchdb_url, const std::string& ca_file, bool insecure, const GetEnv& env) {
  absl::StatusOr<CouchCredentials> credentials = FindCouchCredentials(couchdb_url, env);
  if (!credentials.ok()) {
    return absl::Status(credentials.status().code(),
                        cnp::couchdb::RedactCredentials(credentials.status().message()));
  }
  absl::StatusOr<cnp::couchdb::CouchUrl> url = cnp::couchdb::ParseCouchUrl(credentials->url);
  if (!url.ok()) {
    return absl::Status(url.status().code(),
                        cnp::couchdb::RedactCredentials(url.status().message()));
  }
  if (absl::Status s = CheckCredentialsStayPrivate(*credentials, insecure); !s.ok()) return s;
  cnp::couchdb::CouchClient::Options options;
  options.base_url = url->base;
  options.username = credentials->username;
  options.password = credentials->password;
  if (!ca_file.empty()) {
    absl::StatusOr<std::string> pem =
        ReadPemFile("ca-file", ca_file, PemFileWriters::kNotEveryUser);
    if (!pem.ok()) return pem.status();
    options.ca_pem = *std::move(pem);
  }
  return options;
}

}  // namespace cnp::client::couch
