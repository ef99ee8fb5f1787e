// A _changes answer as cnp derive handles it: its text kept beside the parsed tree, so that each
// changed document goes to cnp-server's Map call as CouchDB wrote it (raw JSON stays raw until
// the worker builds Python objects; a number re-serialised from a tree could come out rounded).
// Numbers in the tree are kept exactly (couchdb::ParseJsonExact): integers of any size, as
// CouchDB stores them, come back digit for digit wherever the tree is written.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/couchdb/json.h"
#include "rapidjson/document.h"

namespace cnp::derive {

struct ChangesAnswer {
  std::string text;
  rapidjson::Document json;             // {"results": [...], "last_seq": ..., ...}
  std::vector<couchdb::TextSpan> docs;  // where json["results"][i]["doc"] lies in text

  // The text of the i-th change's document; empty when it has no document object.
  absl::string_view DocText(size_t i) const {
    if (i >= docs.size() || docs[i].end <= docs[i].begin) return {};
    return absl::string_view(text).substr(docs[i].begin, docs[i].end - docs[i].begin);
  }
};

// Parses `text`, a _changes answer (or what cnp derive makes of a feed's lines), and takes it
// into the answer; on an error `text` is left as it was, for a caller that looks into it.
// `max_depth` as couchdb::ParseJsonExact's.
absl::StatusOr<ChangesAnswer> ParseChanges(std::string& text, int max_depth = couchdb::kMaxJsonDepth);

}  // namespace cnp::derive
