// The direct-session socket of cnp-server (see session.proto): accepts cnp-adapter
// connections, checks the peer's uid, takes CouchDB's pipes from the adapter and gives them to
// a session worker, then mirrors the session's end back to the adapter.
//
// One coroutine per connection on the control loop; every wait on the adapter (its hello, our
// answers) is awaited there with a timer of its own, so a stalled adapter holds only its own
// connection. What a connection may hold before its hello is read is bounded: at most 64 such
// connections at once, a hello of 64 KiB grown as it arrives, the 2 descriptors a hello carries
// (more drop it), and no connection on a descriptor past the cap the gRPC listener keeps
// (service/listen/descriptor_cap.h); those refused or dropped are access-log lines, at most
// one per user and reason per interval (service/rpc/refusal_log.h).
//
// The hot path never comes here: once the worker has the pipes, CouchDB and the worker talk
// with no process in between, and this coroutine only waits for one of two things:
//   - the worker answers SessionEnd (CouchDB closed the pipe, or the protocol ended it), or
//     its socket closes (it crashed, or ended a command that outran CouchDB's timeout): the
//     adapter is told how to exit, and what to write to CouchDB first if the worker could not;
//   - the adapter's connection closes first: CouchDB killed the adapter (os_process_timeout),
//     so the worker is killed too - it may be in the middle of a command whose answer nobody
//     will read - and replaced.
// On the way the worker may send session_progress frames, its function errors since the last
// (at most one a second): they are counted into cnp_function_errors_total and the wait goes on.
//
// Shutdown (SIGTERM to the server) drains direct sessions as gRPC calls are drained: Stop() and
// DrainSessions() refuse new sessions (an adapter is told UNAVAILABLE and uses the Session
// stream), and ask every session's worker to end its session once the command in flight is
// answered (SIGTERM to the worker, service/worker/session_stop.h; sent only once the worker has
// said it took the session, session_started). Such a session ends with SERVER_STOPPING and its
// adapter exits 0 without writing anything to CouchDB. AwaitSessionsEnd() waits for them up to
// the grace; CutSessions() marks those still busy, whose workers the pool then kills: their
// adapters write CouchDB an error for the command cut off.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "asio/io_context.hpp"
#include "asio/local/stream_protocol.hpp"
#include "asio/steady_timer.hpp"
#include "service/listen/listening_socket.h"
#include "service/rpc/access_log.h"
#include "service/rpc/refusal_log.h"
#include "service/session/session_worker_pool.h"

namespace cnp::session {

struct ListenerOptions {
  std::vector<std::string> paths;   // socket paths to listen on (each P.direct)
  std::vector<uid_t> allowed_uids;  // --allow-uid (service/common/socket_users.h adds the rest)
  // --socket-group: the socket is 0660 and owned by this group (as the gRPC socket), else 0600.
  int socket_gid = -1;
  // Non-empty when an adapter started this server: the launch settings it was started with.
  std::string adapter_settings;
  // This server's own settings in the same form, for an operator-started server's one-time
  // report that an adapter asked for others.
  std::string own_settings;
  // How long a connected adapter may take to send its hello: a few hundred bytes on a local
  // socket, sent in one sendmsg() right after it connects. (Tests stretch it to tell a listener
  // that awaits the hello from one that blocks the loop on it.)
  absl::Duration hello_timeout = absl::Seconds(2);
  // CouchDB's timeout for a command until its first reset says otherwise (its default).
  absl::Duration default_couchdb_timeout = absl::Seconds(5);
  // The server's --call-timeout: the longest any command may run, whatever CouchDB's reset says.
  absl::Duration call_timeout = absl::InfiniteDuration();
  // The server's --max-call-bytes: the longest answer a session worker writes to CouchDB for
  // one command (0: the worker's own bound, 64 MiB).
  int64_t max_answer_bytes = 0;
  // --access-log: where refused connections are told, as the gRPC socket's are (empty: stderr).
  std::string access_log;
};

class SessionListener {
 public:
  SessionListener(ListenerOptions options, SessionWorkerPool& pool, asio::io_context& control);
  ~SessionListener();

  // Binds every path as the gRPC listeners bind theirs (service/listen/listening_socket.h:
  // mode 0600, or 0660 with --socket-group; a stale socket file replaced, a live server's
  // refused), or takes the socket systemd passed for it, and starts accepting. With
  // --max-sessions=0 (the pool's max_sessions()) it binds nothing, and a socket systemd passed
  // answers every adapter to use the stream.
  absl::Status Start();
  // Stops accepting and removes the socket files it bound, if they are still the ones it bound;
  // sessions in progress go on.
  void Stop();

  // SIGHUP: the access log (its refused connections) at its path again, as RpcServer's. Without
  // it, once logrotate had renamed the file, this listener's lines went on into the renamed
  // one, and were lost with it. On the control loop.
  void ReopenAccessLog();

  // The server is stopping: from now on no session starts (its adapter is told UNAVAILABLE),
  // and every session is asked to end once the command it serves, if any, is answered. From
  // any thread; returns at once.
  void DrainSessions();
  // Waits until every session has ended and its adapter has been told, or until `deadline`:
  // false if some are left. From any thread but the control loop's.
  bool AwaitSessionsEnd(absl::Time deadline);
  // The sessions left are being cut off (the grace is over: their workers are killed next):
  // their ends are told as that, not as crashes. From any thread.
  void CutSessions();

 private:
  // One session from the moment its worker is about to get CouchDB's pipes to the moment its
  // adapter has been told the end.
  struct LiveSession {
    pid_t worker_pid = 0;
    bool started = false;    // the worker said it took the session; not yet ended
    bool stop_sent = false;  // SIGTERM sent to it
  };
  // Shared with the sessions' coroutines, which may outlive the listener (a loop stopped with
  // them suspended destroys them later).
  struct Sessions {
    absl::Mutex mu;
    std::set<LiveSession*> live ABSL_GUARDED_BY(mu);
    bool draining ABSL_GUARDED_BY(mu) = false;
    bool cut ABSL_GUARDED_BY(mu) = false;
    // Asks `session` to end if the server is stopping and its worker can be asked.
    void AskToStop(LiveSession& session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  };
  class Registration;
  class PendingHello;

  asio::awaitable<void> Accept(asio::local::stream_protocol::acceptor& acceptor);
  asio::awaitable<void> Serve(asio::local::stream_protocol::socket socket, PendingHello pending);
  // Whether settings that differ from this server's are to be reported now: not if they were
  // reported lately, nor within kSettingsReportInterval of the last report (then counted).
  bool FirstReport(absl::string_view settings);
  // " (and N other settings reports ...)" for the next report, if reports were held back.
  std::string SettingsReportsUnlogged();
  bool Allowed(uid_t uid) const;
  asio::awaitable<void> FlushRefusals();

  const ListenerOptions options_;
  const std::set<uid_t> users_;  // who may connect (SO_PEERCRED)
  SessionWorkerPool& pool_;
  asio::io_context& control_;
  std::vector<std::unique_ptr<asio::local::stream_protocol::acceptor>> acceptors_;
  std::vector<listen::ListeningSocket> sockets_;  // each acceptor's socket, for its file
  // Digests of the settings reported lately, oldest first, at most kReportedSettingsKept; when
  // the next report may be logged, and how many were held back meanwhile. Control loop only.
  std::deque<size_t> reported_settings_;
  absl::Time next_settings_report_ = absl::InfinitePast();
  int64_t settings_reports_unlogged_ = 0;
  // Connections whose hello is not read yet (control loop only; shared with their coroutines,
  // which may outlive the listener), and the descriptor cap (descriptor_cap.h) set at Start.
  const std::shared_ptr<int> pending_hellos_ = std::make_shared<int>(0);
  int descriptor_cap_ = 0;
  // A refused peer gets a line per kRefusalLogInterval, not one per connection: a user who may
  // not connect could otherwise grow the log as fast as it can connect. Control loop only.
  std::unique_ptr<rpc::AccessLog> access_log_;
  std::unique_ptr<rpc::RefusalLog> refusals_;
  std::unique_ptr<asio::steady_timer> flush_timer_;  // writes the counts a quiet peer is owed
  const std::shared_ptr<Sessions> sessions_ = std::make_shared<Sessions>();
};

}  // namespace cnp::session
