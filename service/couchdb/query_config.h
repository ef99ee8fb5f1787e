// The configuration CouchDB sends with every "reset", and the rules it drives.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/time/time.h"

namespace cnp::couchdb {

struct QueryConfig {
  enum class ReduceLimit { kOff, kOn, kLog };

  // ["reset", {config}] or a bare ["reset"] (`json` empty). Unknown or mistyped fields keep
  // their defaults, as couchjs ignores them.
  static QueryConfig FromJson(std::string_view json);

  // "reduce_limit": true → kOn, "log" → kLog (3.5), anything else → kOff.
  ReduceLimit reduce_limit = ReduceLimit::kOff;
  // 3.5 sends these; 3.3/3.4 couchjs hard-coded 4096 bytes and a ratio of 2.
  size_t reduce_limit_threshold = 4096;
  double reduce_limit_ratio = 2.0;
  // CouchDB's per-read timeout ([couchdb] os_process_timeout); unset before the first reset.
  std::optional<absl::Duration> timeout;
};

// couchjs's reduce overflow rule: a reduce (or rereduce) whose output is longer than the
// threshold and does not shrink fast enough relative to its input. Returns the message CouchDB
// shows ("Reduce output must shrink more rapidly: ..."), or nothing when the output is fine or
// the limit is off. `input_bytes` is the request line's length minus the function names'.
std::optional<std::string> ReduceOverflow(const QueryConfig& config, size_t output_bytes,
                                          size_t input_bytes);

}  // namespace cnp::couchdb
