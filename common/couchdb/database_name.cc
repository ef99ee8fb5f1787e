#include "common/couchdb/database_name.h"

#include "absl/strings/ascii.h"

namespace cnp::couchdb {

bool IsDatabaseNameCharacter(char c) {
  return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_' || c == '$' || c == '(' ||
         c == ')' || c == '+' || c == '-' || c == '/';
}

bool IsDatabaseName(absl::string_view name) {
  if (name.empty() || !absl::ascii_islower(name[0])) return false;
  for (char c : name) {
    if (!IsDatabaseNameCharacter(c)) return false;
  }
  return true;
}

}  // namespace cnp::couchdb
