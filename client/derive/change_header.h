// The sequence and document id of a change that cannot be used whole: its document is nested
// deeper than couchdb::kMaxJsonDepth, is not valid UTF-8, or is longer than the reader keeps.
// Such a change is recorded as its document's error and skipped, and for that cnp derive needs
// no more than where it is (seq) and whose it is (id). Both are found by rapidjson's SAX reader
// without building a tree, so nesting costs a counter, not memory or stack; the text may be cut
// off after them (CouchDB sends seq and id before the document).
#pragma once

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "rapidjson/document.h"

namespace cnp::derive {

struct ChangeHeader {
  std::string seq_json;  // as sent: a string (CouchDB 2+) or a number
  std::string id;
};

enum class ChangeText {
  kRow,          // one change, {"seq": ..., "id": ..., ...}: a line of a continuous feed
  kFirstResult,  // a _changes answer, {"results": [{change}, ...], ...}: its first change
};

// Nullopt when the text does not give both (or either is not valid UTF-8).
std::optional<ChangeHeader> ScanChangeHeader(absl::string_view text, ChangeText kind);

// A change as cnp derive's batches carry one that could not be read:
// {"seq": <seq>, "id": <id>, "cnp_unreadable": <why>}. No change CouchDB sends has a top-level
// member of that name (a document's own fields are inside "doc").
inline constexpr char kUnreadableMember[] = "cnp_unreadable";
std::string UnreadableChangeJson(const ChangeHeader& header, absl::string_view why);

}  // namespace cnp::derive
