// A direct session: the adapter hands its stdin and stdout (CouchDB's pipes) to cnp-server over
// the session socket next to the service's unix socket (service/session/session.proto), and a
// worker serves CouchDB on them with no process in between. The adapter then only mirrors the
// session's end: it waits on the session socket and exits as the server says.
#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/socket_trust.h"

namespace cnp::adapter {

struct DirectOffer {
  enum class Outcome {
    kNoSocket,        // nothing listens there (an older server, or none): use the stream
    kAccepted,        // a worker has the pipes: call WaitForSessionEnd
    kUseStream,       // at capacity, or no session worker could start
    kSettingsDiffer,  // an adapter started the server with other settings: replace it
    kRefused,         // the server refuses this adapter (its uid): fail
    kSettingsAgree,   // (AskServerSettings) the server may serve this adapter's stream
  };
  Outcome outcome = Outcome::kNoSocket;
  std::string reason;
  pid_t server_pid = 0;     // from the socket's peer credentials, not from the server's word
  bool report_settings_mismatch = false;  // log once that the operator's server keeps its settings
  std::string server_settings;
  int socket = -1;          // the session connection when accepted (owned by the caller)
};

// Connects to `socket_path` and offers this process's stdin and stdout with `settings` (the
// launch-settings text, empty when this adapter never starts a server). The process listening
// there (SO_PEERCRED) must be one `trust` trusts, or nothing is sent: FAILED_PRECONDITION
// naming its uid and --server-user. Waits for the answer until `deadline`; an error means the
// server's state is unknown (it may own the pipes, or is not to be trusted with them), so the
// caller must not read stdin afterwards.
// `max_line_bytes` is --max-line-bytes, the longest line the worker is to read from CouchDB.
absl::StatusOr<DirectOffer> OfferDirectSession(const std::string& socket_path,
                                               const std::string& settings,
                                               int64_t max_line_bytes, const SocketTrust& trust,
                                               absl::Time deadline);

// For the stream path (--session=stream): asks the server on `socket_path` whether its
// settings are this adapter's `settings`, offering no pipes. kSettingsDiffer (an adapter
// started it with others: replace it), kSettingsAgree, kRefused, or kNoSocket (no server with
// direct sessions there: the stream decides). Errors as OfferDirectSession's; CouchDB's pipes
// stay this process's whatever the outcome.
absl::StatusOr<DirectOffer> AskServerSettings(const std::string& socket_path,
                                              const std::string& settings,
                                              const SocketTrust& trust, absl::Time deadline);

// How a session ended, as the server said.
struct SessionEnd {
  int exit_code = 1;
  // The worker refused the session before touching CouchDB's pipes: the stream may serve it.
  bool pipes_untouched = false;
};

// Blocks until the server reports the session's end; writes the server's CouchDB error line
// (if any) to stdout and its message to stderr. A dropped connection (the server died) is an
// end with exit code 1.
SessionEnd WaitForSessionEnd(int socket);

}  // namespace cnp::adapter
