// Whether a CouchClient's base URL is CouchDB's root, and if not, what it is: the commands take
// CouchDB's root URL and name the databases apart, and the mistake users make is to pass a
// database's URL (http://host:5984/mydb), whose answers then read as "no such database".
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/couchdb/couch_client.h"

namespace cnp::couchdb {

// GET / of `couch`'s base URL. OK for CouchDB's welcome (or pouchdb-server's, which stands in
// for it in tests); INVALID_ARGUMENT otherwise, saying what the URL is instead (a database's:
// "... is the URL of the database mydb, not CouchDB's root; pass CouchDB's root URL (here
// probably http://host:5984), ..."), followed by `names_databases` (where the command takes the
// database names from, e.g. "DECLARATION.yml names the databases"). A failed request, 401, 403
// and 5xx are that error, as HttpError says it.
//
// A service that talks to CouchDB for its callers (Upload) passes kWithheld: what another HTTP
// service on its host answers is not its caller's to read, so the error says what the answer
// was not, without quoting it.
enum class AnswerQuoting { kQuoted, kWithheld };
absl::Status CheckCouchRoot(CouchClient& couch, absl::string_view names_databases,
                            AnswerQuoting quoting = AnswerQuoting::kQuoted);

// Only the mistake: INVALID_ARGUMENT as above when GET / answers as a database does (its
// answer has "db_name"); OK for anything else, a failed request included. For a command that
// found a database missing and asks whether that is why, keeping its own message otherwise
// (a proxy that does not pass GET / on must not turn "does not exist" into something else).
absl::Status CheckNotADatabaseUrl(CouchClient& couch, absl::string_view names_databases);

}  // namespace cnp::couchdb
