// Which of cnp-server's per-call limits a call was refused for, as a type rather than as words
// in its message: a client that can make the call smaller (cnp derive maps a batch again in
// halves, and records a single document or reduce key past the limit as its error) needs to
// tell this refusal from the server's other RESOURCE_EXHAUSTED (every worker busy and the queue
// full: retry later), and to know the limit, without reading messages that may be reworded.
//
// On the service's side it is a payload of the absl::Status (WithCallLimit), which
// service/rpc/status_mapping.h sends as the trailer "cnp-call-limit: <kind> <limit>", e.g.
// "cnp-call-limit: answer 100000"; the client library (client/lib/cnp_client.h) reads the
// trailer back into the same payload, so that CallLimitOf answers on either side.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace cnp {

// The most functions one call names: a Map (or MapStream message) or Reduce RPC, and a CouchDB
// session's map functions (add_fun since the last reset) or one reduce line, which names a
// subset of them. One bound for all, so that what a session may hold a call may carry; CouchDB
// sends one function per view of a design document, far fewer.
inline constexpr int kMaxFunctionsPerCall = 4096;

// The longest function name (module.function|version) a call may carry and a worker accepts:
// no real module path comes close, and every cache and message that holds a name stays small.
// cnp upload refuses a longer one in the design document, at its line.
inline constexpr size_t kMaxFunctionNameBytes = 512;

struct CallLimit {
  enum class Kind {
    kAnswer,     // the answer would pass --max-call-bytes
    kRequest,    // the request passes --max-call-bytes
    kDocuments,  // the request holds more documents than --max-docs-per-call
    kFunctions,  // the request names more functions than one call may (4,096): fewer
                 // documents do not help, fewer functions per call do
  };
  Kind kind;
  // Bytes (kAnswer, kRequest), documents (kDocuments) or function names (kFunctions); 0 when
  // the refusal did not say.
  int64_t limit = 0;

  friend bool operator==(const CallLimit&, const CallLimit&) = default;
};

// `status` marked as refused for `limit` (an OK status stays OK, unmarked); a mark it had is
// replaced.
absl::Status WithCallLimit(absl::Status status, CallLimit limit);
// The mark WithCallLimit put on `status`, or that the client library read from its trailer.
std::optional<CallLimit> CallLimitOf(const absl::Status& status);

// The trailer that carries the mark from cnp-server to its clients, and its value's text
// ("answer 100000", "request 0", "documents 1000000", "functions 4096").
inline constexpr char kCallLimitTrailer[] = "cnp-call-limit";
std::string CallLimitText(CallLimit limit);
// nullopt for anything CallLimitText does not write (another kind, a negative or missing limit,
// more words).
std::optional<CallLimit> ParseCallLimit(absl::string_view text);

}  // namespace cnp
