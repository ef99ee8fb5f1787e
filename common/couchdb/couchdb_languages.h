// The design-document languages CouchDB serves itself: a design document in one of them never
// reaches cnp's query server. CouchDB would compile a named function ("myviews.townmap|123")
// as JavaScript or Erlang code, or read the views as Mango indexes: its views fail, and a
// validate_doc_update that fails to compile refuses every write to the database. `cnp upload`
// (and check, and --register) refuses such a language at its YAML line or naming
// --view-server (`cnp sync` has its own such check for the registry's entries).
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace cnp::couchdb {

// "", "javascript" (what a missing or empty language means to CouchDB), "erlang" and "query"
// (Mango), in any case. Any other name may be the operator's name for cnp's query server
// (COUCHDB_QUERY_SERVER_<NAME>), so it is not ours to refuse.
bool IsCouchDbOwnLanguage(absl::string_view language);

// Whether `language` can name a query server at all: CouchDB finds one by the name given in
// COUCHDB_QUERY_SERVER_<NAME> or in its [query_servers] section, one word. A language with a
// space, a line break or another control character names none (an unclosed quote in the YAML
// made one of four lines), and its design document's functions would never run.
bool CanNameAQueryServer(absl::string_view language);

// What CouchDB does with `language` (one for which IsCouchDbOwnLanguage holds), to follow
// "language \"X\" is ": e.g. "CouchDB's own JavaScript: it would run the functions' names as
// JavaScript code".
std::string CouchDbOwnLanguageReason(absl::string_view language);

}  // namespace cnp::couchdb
