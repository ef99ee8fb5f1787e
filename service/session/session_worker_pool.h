// The workers that serve direct sessions, one session each for the session's life.
//
// Separate from the stateless calls' AsyncWorkerPool: a session holds its worker for minutes or
// hours (CouchDB keeps its query-server processes and reuses them with "reset"), so these
// workers must not starve the stateless calls. Spare workers are started ahead (--spare-session-workers) so a
// new session does not wait for Python to start and import; the number of sessions is capped
// (--max-sessions), and a session beyond it uses the gRPC Session stream instead.
//
// Workers start as the batch pool's do (pool::ProcessWorkerFactory): spawned, and their startup
// handshake awaited on the control loop, never blocking it. Every spare is watched while it
// waits: one that dies (the OOM killer, an operator's kill) is reaped and replaced at once, not
// found dead by the next session; spares that keep dying young are replaced with the same
// growing backoff as starts that fail: the batch pool's pool::RestartBackoff, with this pool's
// bounds (SessionPoolOptions). Everything here runs on the control
// loop (one thread), so there is no locking; Shutdown() is the one call made from another thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "service/pool/process_worker.h"
#include "service/pool/reload_requests.h"
#include "service/pool/worker_process.h"

namespace cnp::session {

struct SessionPoolOptions {
  pool::WorkerCommand command;
  // Direct sessions served at once; 0 turns direct sessions off.
  int max_sessions = 64;
  // Started workers kept waiting for the next session.
  int spare_workers = 1;
  // A worker above this resident size after its session is replaced (0: never).
  int64_t max_resident_bytes = 0;
  absl::Duration startup_timeout = absl::Seconds(30);
  // The wait before the next spare after failed starts (or young deaths) in a row: min_backoff
  // doubling up to max_backoff (pool::RestartBackoff). A spare that lived max_backoff was no
  // young death.
  absl::Duration min_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(30);
  // How long reload requests must stop coming before the merged follow-up reload starts
  // (pool/reload_requests.h), as the batch pool's PoolOptions::reload_quiet.
  absl::Duration reload_quiet = absl::Milliseconds(500);
};

// A worker lent to one session.
struct SessionWorker {
  std::unique_ptr<pool::ProcessWorker> process;
  int id = 0;               // for logs: "session worker 3"
  uint64_t generation = 0;  // the reload generation it was started in
  absl::Time started_at;
  bool watched = false;     // a WatchSpare awaits its end (from when it first became a spare)
};

class SessionWorkerPool {
 public:
  SessionWorkerPool(SessionPoolOptions options, asio::io_context& control);
  ~SessionWorkerPool();

  // Starts keeping spares (on the control loop).
  void Start();

  // A started worker for a new session: a spare, else a new one. RESOURCE_EXHAUSTED at the
  // session cap, UNAVAILABLE when no worker could start or the server is stopping.
  asio::awaitable<absl::StatusOr<SessionWorker>> Take();

  // Gives back the worker of an ended session. `reusable` is false when it crashed, was
  // killed or asked to be recycled; it is also replaced when over its memory cap or started
  // before the last reload. A worker not kept is killed here and reaped on the loop.
  void Return(SessionWorker worker, bool reusable);

  // SIGHUP: spares are replaced at once (killed now, reaped on the loop), session workers when
  // their session ends. Merged as the batch pool merges reloads (pool/reload_requests.h): one
  // asked for while the last reload's spares are still starting follows once they are all
  // there and no request came for reload_quiet, so that a storm of SIGHUPs does not start a
  // spare per signal.
  void Reload();

  // The server is stopping: no session is taken from now on (UNAVAILABLE) and no spare
  // started; the spares are ended, the workers in a session are left to end their sessions
  // (each is killed when its session ends). Safe from any thread; returns once done.
  void StopTaking();

  // Kills every worker, spare or in a session (their adapters then exit, and CouchDB starts
  // new query servers). Safe from any thread; returns once done.
  void Shutdown();

  int sessions() const { return sessions_; }
  // The started spares' pids (for tests and logs).
  std::vector<pid_t> spare_pids() const;
  int max_sessions() const { return options_.max_sessions; }

 private:
  asio::awaitable<absl::StatusOr<SessionWorker>> StartOne();
  asio::awaitable<void> KeepSpares();
  void Kick();
  // The wait before the next start after `failures` failures (or young deaths) in a row.
  absl::Duration Backoff(int failures) const;
  // Adds a spare, and starts watching it if it is not watched yet.
  void AddSpare(SessionWorker worker);
  // Awaits the end of worker `id` on `pidfd` (a duplicate of its pidfd: the worker itself may
  // go to a session or be destroyed meanwhile); if it is a spare then, it is removed, reaped and
  // replaced. Lasts the worker's life, spare or not.
  asio::awaitable<void> WatchSpare(int id, int pidfd);
  // Kills `worker` and awaits its end on the loop, logging how it ended.
  void End(SessionWorker worker, const char* why);
  // Replaces the spares now (a new generation).
  void ReloadNow();

  const SessionPoolOptions options_;
  asio::io_context& control_;
  pool::ProcessWorkerFactory factory_;
  asio::steady_timer wake_;
  std::vector<SessionWorker> spares_;
  std::map<int, pid_t> in_session_;  // worker id -> pid, to kill them at shutdown
  int sessions_ = 0;                 // sessions holding (or about to hold) a worker
  int starting_spares_ = 0;
  int next_id_ = 0;
  uint64_t generation_ = 0;
  pool::ReloadRequests reloads_{options_.reload_quiet};
  bool reload_running_ = false;  // the last reload's spares are not all started yet
  int consecutive_failures_ = 0;  // starts that failed in a row
  int young_spare_deaths_ = 0;    // spares that died soon after their start, in a row
  absl::Time next_start_ = absl::InfinitePast();  // the backoff: no spare starts before
  bool stopped_ = false;
};

}  // namespace cnp::session
