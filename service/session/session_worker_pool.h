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
#include <deque>
#include <map>
#include <memory>
#include <optional>
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
  // Workers starting at once, spares included. When CouchDB starts many query servers together
  // (a node restarting with many views to build), a start per waiting session would start them
  // all at once, each slower for the others, until none was ready within CouchDB's timeout; the
  // sessions that wait instead take workers as they come, or the Session stream at their
  // deadline.
  int max_parallel_starts = 2;
  // The workers' memory cap: one grown, since it started, into the last of it when its
  // session ends is replaced (pool/memory_cap.h; 0: never).
  int64_t memory_cap_bytes = 0;
  // --max-calls-per-worker: a worker that has answered this many of CouchDB's lines, in all its
  // sessions, is replaced when its session ends (CouchDB keeps a session's process; 0: never).
  int64_t max_calls_per_worker = 0;
  absl::Duration startup_timeout = absl::Seconds(30);
  // The wait before the next spare after failed starts (or young deaths) in a row: min_backoff
  // doubling up to max_backoff (pool::RestartBackoff). A spare that lived max_backoff was no
  // young death.
  absl::Duration min_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(30);
  // How long reload requests must stop coming before the merged follow-up reload starts
  // (pool/reload_requests.h), as the batch pool's PoolOptions::reload_quiet.
  absl::Duration reload_quiet = absl::Milliseconds(500);
  // How often the session workers' resident memory is read for
  // cnp_session_workers_resident_bytes (their sum and the largest), as the batch pool's
  // memory watch reads its workers'.
  absl::Duration memory_check_interval = absl::Seconds(2);
};

// A worker lent to one session.
struct SessionWorker {
  std::unique_ptr<pool::ProcessWorker> process;
  int id = 0;               // for logs: "session worker 3"
  uint64_t generation = 0;  // the reload generation it was started in
  absl::Time started_at;
  int64_t commands = 0;     // CouchDB's lines it has answered, in all its sessions
  bool watched = false;     // a WatchSpare awaits its end (from when it first became a spare)
};

class SessionWorkerPool {
 public:
  // Why a worker is ended here: the words of its log line and the cause it is counted under
  // in cnp_worker_exits_total (none for the server stopping, as in the batch pool, nor for a
  // session that ended badly, which session_listener.cc counts where it saw how).
  enum class EndCause {
    kSessionEndedBadly, kStopping, kReload, kMemory, kCalls, kSurplus, kDied
  };

  SessionWorkerPool(SessionPoolOptions options, asio::io_context& control);
  ~SessionWorkerPool();

  // Starts keeping spares (on the control loop).
  void Start();

  // A started worker for a new session: a spare, else the next one to finish starting (a start
  // is added for it while fewer than max_parallel_starts run). RESOURCE_EXHAUSTED at the session
  // cap; UNAVAILABLE when none is ready by `deadline` (the adapter still holds CouchDB's pipes
  // then and serves them over the Session stream), when a start failed, or when the server is
  // stopping. A start that ends after its session gave up serves the next session instead.
  asio::awaitable<absl::StatusOr<SessionWorker>> Take(
      absl::Time deadline = absl::InfiniteFuture());

  // Gives back the worker of an ended session. `reusable` is false when it crashed, was
  // killed or asked to be recycled; it is also replaced when over its memory cap or started
  // before the last reload. A kept worker goes to a session waiting in Take, else it is a
  // spare if spares are missing; a worker not kept is killed here and reaped on the loop.
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
  // Workers starting now, spares included, and sessions waiting in Take (for tests and logs).
  int starts_in_flight() const { return starting_spares_ + starting_for_sessions_; }
  size_t waiting_sessions() const { return waiters_.size(); }
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
  // A worker ready for a session: to the session that has waited longest in Take, else a spare
  // if fewer than spare_workers wait, else ended.
  void Offer(SessionWorker worker);
  // Starts workers for the sessions waiting in Take that no start in progress will serve, as
  // far as max_parallel_starts allows.
  void StartForWaitingSessions();
  asio::awaitable<void> StartForWaitingSession();
  // Awaits the end of worker `id` on `pidfd` (a duplicate of its pidfd: the worker itself may
  // go to a session or be destroyed meanwhile); if it is a spare then, it is removed, reaped and
  // replaced. Lasts the worker's life, spare or not.
  asio::awaitable<void> WatchSpare(int id, int pidfd);
  // Kills `worker` and awaits its end on the loop, logging why.
  void End(SessionWorker worker, EndCause cause);
  // Replaces the spares now (a new generation).
  void ReloadNow();
  // Reads every session worker's resident memory each memory_check_interval, for the metrics.
  asio::awaitable<void> WatchMemory();

  const SessionPoolOptions options_;
  asio::io_context& control_;
  pool::ProcessWorkerFactory factory_;
  asio::steady_timer wake_;
  asio::steady_timer memory_timer_;
  std::vector<SessionWorker> spares_;
  std::map<int, pid_t> in_session_;  // worker id -> pid, to kill them at shutdown
  int sessions_ = 0;                 // sessions holding (or about to hold) a worker
  int starting_spares_ = 0;
  int starting_for_sessions_ = 0;
  // A session waiting in Take: woken (its timer cancelled) with a worker, with the failure of
  // the start that was to serve it, or by the shutdown.
  struct Waiter {
    explicit Waiter(asio::io_context& loop) : wake(loop) {}
    asio::steady_timer wake;
    std::optional<SessionWorker> worker;
    absl::Status failed;
  };
  std::deque<Waiter*> waiters_;  // oldest first
  int next_id_ = 0;
  uint64_t generation_ = 0;
  pool::ReloadRequests reloads_{options_.reload_quiet};
  bool reload_running_ = false;  // the last reload's spares are not all started yet
  int consecutive_failures_ = 0;  // starts that failed in a row
  int young_spare_deaths_ = 0;    // spares that died soon after their start, in a row
  absl::Time next_start_ = absl::InfinitePast();  // the backoff: no spare starts before
  // No spare replacing one a session took starts before (kSpareReplacementDelay): a short
  // session's worker comes back as the spare instead. Past when a session had to wait for a
  // worker, or a worker will not come back.
  absl::Time replace_at_ = absl::InfinitePast();
  bool stopped_ = false;
};

}  // namespace cnp::session
