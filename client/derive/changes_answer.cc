#include "client/derive/changes_answer.h"

#include <utility>

namespace cnp::derive {

absl::StatusOr<ChangesAnswer> ParseChanges(std::string& text, int max_depth) {
  ChangesAnswer answer;
  absl::StatusOr<rapidjson::Document> json = couchdb::ParseJsonExact(text, "results", &answer.docs, max_depth);
  if (!json.ok()) return json.status();
  answer.json = *std::move(json);
  answer.text = std::move(text);
  return answer;
}

}  // namespace cnp::derive
