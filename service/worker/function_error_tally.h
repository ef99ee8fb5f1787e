// A direct session's function errors (service/common/function_errors.h), counted by function as
// the session's replies arrive, and sent to the server on the worker's socket in
// SessionProgress frames (worker.proto) for its cnp_function_errors_total: the server sees
// nothing else of a direct session until its end, which may be hours away.
//
// A frame goes at most once a second, and only while there are new errors: a view that fails
// on every document costs a frame a second, never one per document. The clock is read only
// while errors wait to be sent, and only when the session is about to wait for CouchDB's next
// line (BeforeWaiting): a frame that is due goes then, and one that is not yet due is waited for
// along with CouchDB's line (one poll), so that the errors of a burst reach the server within a
// second even if CouchDB then goes quiet. What is left goes in a last frame before the
// session_end (Flush). A worker that exits at a command's timeout loses what it had not sent.
#pragma once

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace cnp::worker {

class FunctionErrorTally {
 public:
  // `server` is the worker's socket to cnp-server; frames are written on it, blocking.
  explicit FunctionErrorTally(int server) : server_(server) {}

  FunctionErrorTally(const FunctionErrorTally&) = delete;
  FunctionErrorTally& operator=(const FunctionErrorTally&) = delete;

  // One document (or item) on which `function` raised.
  void Count(absl::string_view function);

  // Called before the session blocks reading CouchDB's next line from `input`: does nothing
  // unless errors wait to be sent. Then they are sent now if a second has passed since the last
  // frame, else when it has, unless CouchDB's line comes first (they wait for the next call).
  void BeforeWaiting(int input);

  // Sends what is left, if anything: before the session's end.
  void Flush();

 private:
  void Send(int64_t now_ns);

  const int server_;
  absl::flat_hash_map<std::string, uint64_t> pending_;
  int64_t last_sent_ns_ = INT64_MIN / 2;  // the first frame may go at once
  bool server_gone_ = false;  // a write failed: nobody reads the frames any more
};

}  // namespace cnp::worker
