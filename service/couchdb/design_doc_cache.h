// The design documents one CouchDB session was taught with ["ddoc","new",id,ddoc].
//
// CouchDB teaches a process a design document once and expects it to be remembered until the
// process exits, across every "reset". Only the function names matter to the service, so a
// design document is kept as the map from function path (["filters","by_town"],
// ["views","v","map"], ["validate_doc_update"], ...) to the function's name.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace cnp::couchdb {

class DesignDocCache {
 public:
  // Learns (or relearns, for a newer revision) design document `id` from its JSON text.
  // INVALID_ARGUMENT when `json` is not a JSON object.
  absl::Status Put(std::string_view id, std::string_view json);

  bool Contains(std::string_view id) const;

  // The function named at `path` in design document `id`, or nothing when the document or the
  // function is missing or the value there is not a string.
  std::optional<std::string> FindFunction(std::string_view id,
                                          const std::vector<std::string>& path) const;

 private:
  // Function path (elements joined by kPathSeparator) → function name.
  using Functions = std::map<std::string, std::string, std::less<>>;
  static constexpr char kPathSeparator = '\x1f';

  std::map<std::string, Functions, std::less<>> docs_;
};

}  // namespace cnp::couchdb
