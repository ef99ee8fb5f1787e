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
  // their defaults, as couchjs ignores them; so do all of a `json` longer than kMaxJsonBytes.
  static QueryConfig FromJson(std::string_view json);
  static constexpr size_t kMaxJsonBytes = size_t{64} << 10;

  // "reduce_limit": true → kOn, "log" → kLog (3.5), anything else → kOff.
  ReduceLimit reduce_limit = ReduceLimit::kOff;
  // 3.5 sends these; 3.3/3.4 couchjs hard-coded 4096 bytes and a ratio of 2.
  size_t reduce_limit_threshold = 4096;
  double reduce_limit_ratio = 2.0;
  // CouchDB's per-read timeout ([couchdb] os_process_timeout); unset before the first reset.
  std::optional<absl::Duration> timeout;
};

// The setting that raises the server's --call-timeout, as a timeout's message names it for the
// user to change: cnp-server's own flag, or, for a server cnp-adapter started (it was given
// --adapter-settings), the adapter's --call-timeout, which the adapter passes on to it.
inline std::string_view CallTimeoutSetting(bool started_by_adapter) {
  return started_by_adapter ? "the --call-timeout of the cnp-adapter that started this cnp-server"
                            : "cnp-server's --call-timeout";
}

// couchjs's reduce overflow rule: a reduce (or rereduce) whose output is longer than the
// threshold and does not shrink fast enough relative to its input. Returns the message CouchDB
// shows ("Reduce output must shrink more rapidly: ..."), or nothing when the output is fine or
// the limit is off. Lengths are JavaScript's (JavaScriptLength), as couchjs measures them:
// `output_length` that of the reductions' JSON text, `input_length` that of the request line
// less the function names'.
std::optional<std::string> ReduceOverflow(const QueryConfig& config, size_t output_length,
                                          size_t input_length);

// The length JavaScript gives the UTF-8 text `utf8` once decoded: its UTF-16 code units, one
// per character and two for one outside the Basic Multilingual Plane (a 4-byte sequence).
// "日" is 3 bytes and 1 unit; "😀" is 4 bytes and 2 units.
size_t JavaScriptLength(std::string_view utf8);

}  // namespace cnp::couchdb
