#include "common/couchdb/couchdb_languages.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace cnp::couchdb {

bool IsCouchDbOwnLanguage(absl::string_view language) {
  // CouchDB looks its query servers up by the lower-case name; "JavaScript" is still meant
  // as JavaScript, and naming no query server of ours it could never reach cnp either.
  return language.empty() || absl::EqualsIgnoreCase(language, "javascript") ||
         absl::EqualsIgnoreCase(language, "erlang") || absl::EqualsIgnoreCase(language, "query");
}

bool CanNameAQueryServer(absl::string_view language) {
  if (language.empty()) return false;
  for (const char c : language) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte == 0x7f) return false;
  }
  return true;
}

std::string CouchDbOwnLanguageReason(absl::string_view language) {
  if (language.empty() || absl::EqualsIgnoreCase(language, "javascript")) {
    return "CouchDB's own JavaScript (couchjs, also what no language means): it would compile "
           "each function name as JavaScript code, so views fail and a validate_doc_update "
           "refuses every write";
  }
  if (absl::EqualsIgnoreCase(language, "erlang")) {
    return "CouchDB's own Erlang, run inside CouchDB: it would compile each function name as "
           "Erlang code, so views fail and a validate_doc_update refuses every write";
  }
  return "CouchDB's own Mango (\"query\" indexes): it would read the views as Mango indexes, "
         "not as named functions";
}

}  // namespace cnp::couchdb
