// CouchDB's rule for the name of a database it creates (PUT /db): a lowercase letter first,
// then lowercase letters, digits and _$()+-/. System databases (_users, _replicator) are
// named by CouchDB itself and are not of this form.
#pragma once

#include "absl/strings/string_view.h"

namespace cnp::couchdb {

bool IsDatabaseName(absl::string_view name);

// One of the characters a database name may hold (its first must also be a lowercase letter).
bool IsDatabaseNameCharacter(char c);

// Why a name is refused, to follow "CouchDB would refuse to create it: ".
inline constexpr absl::string_view kDatabaseNameRule =
    "a database name starts with a lowercase letter (a-z) and holds only lowercase letters, "
    "digits and _$()+-/";

}  // namespace cnp::couchdb
