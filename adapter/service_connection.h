// The adapter's one long-lived Session stream to cnp-server, used synchronously: each line is
// written and its reply read on the calling thread, so the adapter adds no thread hop. Each
// exchange has a deadline, so a service that stops answering is given up like one that died.
//
// When the stream breaks (the service restarted, a replica behind a load balancer died), the
// connection reconnects with backoff, teaches the new stream the session state (SessionState),
// and retries the command in flight: every command is pure, so running it twice is safe. It gives
// up in time for CouchDB to read the error before its own timeout. Design documents are taught
// to a new stream one by one, before the first command that names each: a process CouchDB has
// taught thousands would otherwise spend its timeout replaying them.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "adapter/service_launcher.h"
#include "adapter/session_state.h"
#include "client/lib/channel_security.h"
#include "cnp/v1/functions.grpc.pb.h"

namespace cnp::adapter {

class ServiceConnection {
 public:
  struct Options {
    std::string target;
    // TLS and the bearer token, for a service on TCP that requires them.
    client::ChannelSecurity security;
    // --server-user, resolved once: the server's user, for a unix socket owned by a dedicated
    // account (common/socket_trust.h).
    std::optional<uid_t> server_uid;
    // Start a cnp-server when nothing answers at `target` (a unix socket).
    bool may_launch = false;
    LaunchOptions launch;
    // Lines the service sends before a command's answer (SessionOutput.partial), to write to
    // CouchDB at once. Not called for the lines of a replay.
    std::function<void(const v1::SessionOutput&)> write_early;
  };

  ServiceConnection(Options options, const SessionState& state);
  ~ServiceConnection();

  // Sends a line the service does not answer (reset). A send that fails is not retried here: the
  // next Call() reconnects and replays the state, this reset included.
  void Send(std::string_view line);

  // Sends a line and waits for the service's reply. With `retry`, a broken stream is replaced
  // and the line sent again until CouchDB's timeout is near; without it (a list row: the list's
  // worker is gone with the stream) the first failure is returned: UNAVAILABLE, or
  // RESOURCE_EXHAUSTED (never retried) when the service refused the line as too large. The reply
  // stays valid until the next call.
  absl::StatusOr<const v1::SessionOutput*> Call(std::string_view line, bool retry);

 private:
  // How an operation on the stream ended: done, failed (the stream broke), or still pending at
  // the deadline (Drop cancels it).
  enum class Op { kDone, kFailed, kExpired };

  // How long an exchange may wait for the service's answer (see the definition).
  absl::Duration AnswerWithin() const;
  // `reached`: a stream was opened, so a failure is the service's answer, not the network's.
  absl::Status Connect(absl::Time deadline, absl::Time answer_by, bool* reached);
  absl::Status Replay(absl::Time deadline, absl::Time answer_by);
  // The status of a stream `dropped` as it was taught `line` again: FAILED_PRECONDITION (not
  // retried) if the replica refused that line as too large.
  static absl::Status ReplayRefused(absl::Status dropped, std::string_view line);
  // Before `line` is sent: teaches this stream the design document it names, if CouchDB taught
  // it one the stream has not been taught. The stream is dropped when that fails.
  absl::Status TeachDesignDocFor(std::string_view line, absl::Time deadline, absl::Time answer_by);
  // After the service answered `line`: a design document it accepted is known to this stream.
  void NoteDesignDocTaught(std::string_view line);
  // Writes `line` and reads its answer, reading past heartbeats (and, with `forward_early`,
  // handing their lines to Options::write_early; each such hand-over restarts CouchDB's
  // timeout, and moves `answer_by` as far). False when the stream broke, the answer did not
  // come by `answer_by`, or a service that sends heartbeats went silent for longer than
  // kSilenceLimit heartbeats.
  bool Exchange(std::string_view line, absl::Time answer_by, bool forward_early = false);
  // Waits for the operation just started on the stream.
  Op Await(absl::Time deadline);
  absl::Status Drop();

  const Options options_;
  const SessionState& state_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Functions::Stub> stub_;
  std::unique_ptr<grpc::ClientContext> context_;
  // Polled by the calling thread itself, as the blocking API did, but with a deadline.
  std::unique_ptr<grpc::CompletionQueue> queue_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<v1::SessionInput, v1::SessionOutput>> stream_;
  bool pending_ = false;  // an operation on stream_ has not completed yet
  bool expired_ = false;  // and it is because the service did not answer in time
  bool silent_ = false;   // and it is because a service that sends heartbeats went silent
  // The heartbeat interval the service announced on its stream's first output
  // (SessionOutput.heartbeat_ms; zero from a server that sends none). Kept when the stream is
  // replaced, so that a new stream that reached a stopped replica (a proxy picks the replica)
  // is given up as soon, until the new stream's first output says what its server does. Before
  // any output, the interval asked for: the first stream of an adapter that reached a stopped
  // replica is given up as soon too (a server older than heartbeats then has 2.5 s for a first
  // answer; after it, none).
  absl::Duration heartbeat_;
  bool heard_on_stream_ = false;  // this stream has had its first output
  // The command in flight has had an output (a heartbeat at least): a service whose answer did
  // not come in time was alive, working on it, not stopped.
  bool heard_in_exchange_ = false;
  // When the command in flight last had lines forwarded to CouchDB (or began): CouchDB's
  // timeout, and so a retry's time, runs from there.
  absl::Time last_line_forwarded_;
  // The design documents (SessionState's ids) this stream has been taught.
  absl::flat_hash_set<std::string> taught_design_docs_;
  v1::SessionInput input_;
  v1::SessionOutput output_;
};

// Whether the service's reply to `line` (of kind `kind`) means it learnt what the line teaches
// (add_lib, add_fun, ddoc new), so that a new stream must be taught it again after a failover.
// The typed signal is the reply's `accepted`. A server older than that field (an old cnp-server,
// or a replica mid-upgrade) never sets it but answers such a line with exactly `true`; without
// the old rule its sessions would replay no functions, and map_doc on the new stream would
// silently return no rows. `true` to any other kind of line teaches nothing.
bool ReplyTaughtSession(couchdb::CommandKind kind, const v1::SessionOutput& reply);

// For a unix-socket target: OK when it may be trusted with CouchDB's documents (or, on the
// direct path, CouchDB's pipes): its directory and socket belong to this user, root or the
// --server-user, and others may not write there (common/socket_trust.h). The default directory,
// where the adapter may start a service, must be ours, and may be missing (the adapter creates
// it); another directory that is missing is UNAVAILABLE (nothing listens there yet).
// FAILED_PRECONDITION, naming the path, its owner and --server-user, otherwise.
absl::Status CheckTargetSocket(const ServiceConnection::Options& options);

}  // namespace cnp::adapter
