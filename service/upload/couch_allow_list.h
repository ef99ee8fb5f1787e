// Which CouchDB servers an Upload may talk to: the operator's --couchdb-allow URL prefixes, or,
// without any, CouchDB on this host only (loopback addresses). Whoever can call the service
// must not be able to make it send requests to any host and port it can reach.
//
//   --couchdb-allow=https://couch.example.com:6984   that server, any path under it
//   --couchdb-allow=http://10.0.0.5:5984/couch       only under /couch
//   --couchdb-allow=*                                any http(s) URL (the old behaviour)
//
// Credentials cross the network in plain text only where the operator chose it: to a CouchDB
// off this host over http://, only under a prefix that names that http:// URL, never by `*`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/couchdb/couch_url.h"

namespace cnp::upload {

class CouchAllowList {
 public:
  // Loopback only.
  CouchAllowList() = default;

  // INVALID_ARGUMENT naming the flag when a prefix is not an http(s) URL.
  static absl::StatusOr<CouchAllowList> FromPrefixes(const std::vector<std::string>& prefixes);

  // OK, or PERMISSION_DENIED saying which flag allows the URL.
  absl::Status Check(const couchdb::CouchUrl& url) const;

  // For an Upload that carries credentials: OK, or PERMISSION_DENIED when they would go in
  // plain text (http://) to a host other than this one that no http:// prefix names.
  absl::Status CheckCredentialsMayGo(const couchdb::CouchUrl& url) const;

 private:
  bool UnderAPrefix(const couchdb::CouchUrl& url) const;

  bool any_ = false;
  std::vector<std::string> prefixes_;  // normalised CouchUrl::base values
};

// Whether the URL's host is loopback by common/loopback.h's rule (localhost, 127.0.0.0/8, [::1],
// [::ffff:127.x.x.x]), the rule cnp-server's plaintext listeners and the clients also follow.
bool IsLoopbackUrl(const couchdb::CouchUrl& url);

}  // namespace cnp::upload
