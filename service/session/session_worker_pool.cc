#include "service/session/session_worker_pool.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/post.hpp"
#include "asio/redirect_error.hpp"
#include "asio/use_awaitable.hpp"
#include "service/common/log.h"
#include "service/common/run_on_loop.h"
#include "service/metrics/service_metrics.h"
#include "service/pool/memory_cap.h"
#include "service/pool/restart_policy.h"
#include "service/pool/worker.h"

namespace cnp::session {
namespace {

// How long a worker that failed is given to finish dying, so the log can say how it ended.
constexpr absl::Duration kEndGrace = absl::Milliseconds(200);

// How long the replacement of a spare a session took waits. A session that ends within it
// gives its worker back as the spare, where a replacement started at once would have been
// thrown away the moment it was ready ("enough spares are waiting"): a start per short
// session. A burst does not wait for it: a session that finds no spare starts a worker
// for itself at once, and the spares are then replaced at once too (Take).
constexpr absl::Duration kSpareReplacementDelay = absl::Milliseconds(500);

// Owns a killed worker until its end has been awaited (the process reaped).
asio::awaitable<void> Reap(std::unique_ptr<pool::ProcessWorker> process) {
  co_await process->Ended();
}

// The cnp_worker_exits_total cause of a worker End() ends for `why` (Return's and ReloadNow's
// reasons), or null when it is not counted here: a session that ended abnormally is counted by
// the session listener, which knows how it ended (crash, deadline, cancel, recycle), and the
// server's stop is no worker's exit (as in the batch pool).
// An EndCause's words for the log ("ending session worker 3 ... because <why>") and its
// cnp_worker_exits_total cause, if it is counted here.
struct EndCauseText {
  const char* why;
  const char* counted_as;
};
EndCauseText TextOf(SessionWorkerPool::EndCause cause) {
  using Cause = SessionWorkerPool::EndCause;
  switch (cause) {
    case Cause::kSessionEndedBadly: return {"its session ended abnormally", nullptr};
    case Cause::kStopping: return {"the server is stopping", nullptr};
    case Cause::kReload: return {"of a reload", "reload"};
    case Cause::kMemory: return {"it is over its memory cap", "memory"};
    case Cause::kCalls: return {"it has served --max-calls-per-worker lines", "recycle"};
    case Cause::kSurplus: return {"enough spares are waiting", "surplus"};
    case Cause::kDied: return {"it died during its session", "crash"};
  }
  return {"of an unknown cause", nullptr};
}

}  // namespace

SessionWorkerPool::SessionWorkerPool(SessionPoolOptions options, asio::io_context& control)
    : options_(std::move(options)), control_(control), factory_(options_.command),
      wake_(control), memory_timer_(control) {}

SessionWorkerPool::~SessionWorkerPool() = default;

void SessionWorkerPool::Start() {
  if (options_.max_sessions <= 0) return;
  asio::co_spawn(control_, KeepSpares(), asio::detached);
  asio::co_spawn(control_, WatchMemory(), asio::detached);
}

void SessionWorkerPool::Kick() { wake_.cancel(); }

absl::Duration SessionWorkerPool::Backoff(int failures) const {
  return pool::RestartBackoff(options_.min_backoff, options_.max_backoff, failures);
}

asio::awaitable<absl::StatusOr<SessionWorker>> SessionWorkerPool::StartOne() {
  const uint64_t generation = generation_;
  const int id = next_id_++;
  absl::StatusOr<std::unique_ptr<pool::ProcessWorker>> started =
      co_await factory_.StartProcess(options_.startup_timeout);
  if (!started.ok()) {
    co_return absl::UnavailableError(
        absl::StrCat("a session worker failed to start: ", started.status().message()));
  }
  LogInfo("session worker ", id, " started (pid ", (*started)->pid(), ")");
  metrics::WorkerStarted("session");
  co_return SessionWorker{std::move(*started), id, generation, absl::Now()};
}

void SessionWorkerPool::End(SessionWorker worker, EndCause cause) {
  const EndCauseText text = TextOf(cause);
  LogInfo("ending session worker ", worker.id, " (pid ", worker.process->pid(), ") because ",
          text.why);
  if (text.counted_as != nullptr) metrics::WorkerExited(text.counted_as, "session");
  worker.process->Kill();
  asio::co_spawn(control_, Reap(std::move(worker.process)), asio::detached);
}

void SessionWorkerPool::AddSpare(SessionWorker worker) {
  if (!worker.watched) {
    const int pidfd = worker.process->DuplicatePidfd();
    if (pidfd >= 0) {
      worker.watched = true;
      asio::co_spawn(control_, WatchSpare(worker.id, pidfd), asio::detached);
    } else {
      // Out of descriptors: it is found dead when a session takes it, as a last resort.
      LogWarning("cannot watch spare session worker ", worker.id, ": ", std::strerror(errno));
    }
  }
  spares_.push_back(std::move(worker));
}

asio::awaitable<void> SessionWorkerPool::WatchSpare(int id, int pidfd) {
  asio::posix::stream_descriptor exited(control_, pidfd);
  // A wake counts only when the pidfd says, now, that the process has exited. An asio wait can
  // complete without its event: a descriptor closed while an event of its was still queued
  // leaves that event to whichever descriptor is registered next in its place. A live spare
  // taken for dead was owned by no one: never ended, kept out of reloads and of the memory
  // metric until the server exited (seen once in ~500 churned sessions).
  for (;;) {
    asio::error_code ec;
    co_await exited.async_wait(asio::posix::stream_descriptor::wait_read,
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec || stopped_) co_return;
    pollfd readable{pidfd, POLLIN, 0};
    if (::poll(&readable, 1, 0) > 0) break;
  }
  auto spare = std::find_if(spares_.begin(), spares_.end(),
                            [id](const SessionWorker& worker) { return worker.id == id; });
  if (spare == spares_.end()) co_return;  // it ended in a session, or a reload ended it
  SessionWorker dead = std::move(*spare);
  spares_.erase(spare);
  replace_at_ = absl::InfinitePast();  // no session will give this one back
  metrics::WorkerExited("crash", "session");
  // One that had lived a while just died (once is no pattern); one that keeps dying soon after
  // its start would otherwise be restarted in a loop.
  const absl::Time now = absl::Now();
  young_spare_deaths_ =
      now - dead.started_at < options_.max_backoff ? young_spare_deaths_ + 1 : 0;
  absl::Duration wait = absl::ZeroDuration();
  if (young_spare_deaths_ > 0) {
    wait = Backoff(young_spare_deaths_);
    next_start_ = std::max(next_start_, now + wait);
  }
  Kick();
  // It has exited (a no-op then); should it ever not have, it ends here rather than living on
  // unowned while Ended() waits for it.
  dead.process->Kill();
  // Awaited apart from the log line: GCC mishandles a co_await among temporaries.
  const std::optional<std::string> how = co_await dead.process->Ended();
  const std::string when =
      wait > absl::ZeroDuration() ? absl::StrCat(" in ", absl::FormatDuration(wait)) : "";
  LogWarning("spare session worker ", id, " (pid ", dead.process->pid(), ") ",
             how.value_or("ended"), " while it waited; starting another", when);
}

asio::awaitable<void> SessionWorkerPool::KeepSpares() {
  while (!stopped_) {
    // Spares count against the cap: a worker process is a Python interpreter either way.
    const int wanted = std::min<int>(options_.spare_workers,
                                     options_.max_sessions - sessions_);
    // A reload has run once its spares are all there again; a reload merged meanwhile may be
    // due then.
    if (static_cast<int>(spares_.size()) >= wanted) reload_running_ = false;
    absl::Time reload_due = absl::InfiniteFuture();
    if (!reload_running_ && reloads_.FollowUpDue(absl::Now(), reload_due)) {
      LogInfo("reloading the spare session workers again, for the reloads asked for meanwhile");
      ReloadNow();
      continue;
    }
    absl::Duration wait = absl::Hours(1);
    if (static_cast<int>(spares_.size()) + starting_spares_ < wanted &&
        starts_in_flight() < options_.max_parallel_starts) {
      const absl::Time now = absl::Now();
      if (const absl::Duration backoff = next_start_ - now; backoff > absl::ZeroDuration()) {
        wait = backoff;
      } else if (replace_at_ > now) {
        wait = replace_at_ - now;  // the session that took the spare may give its worker back
      } else {
        ++starting_spares_;
        absl::StatusOr<SessionWorker> started = co_await StartOne();
        --starting_spares_;
        if (stopped_) co_return;
        if (started.ok()) {
          consecutive_failures_ = 0;
          Offer(std::move(*started));  // ended there if a reload came meanwhile
          continue;
        }
        ++consecutive_failures_;
        wait = Backoff(consecutive_failures_);
        next_start_ = absl::Now() + wait;
        LogError(started.status().message(), "; retrying in ", absl::FormatDuration(wait));
        // Sessions that came while it started counted on it (starts_in_flight) and started
        // none of their own: they get theirs now, or, at --max-sessions, no spare start would
        // ever come for them.
        StartForWaitingSessions();
      }
    }
    wait = std::min(wait, std::max(reload_due - absl::Now(), absl::ZeroDuration()));
    wake_.expires_after(absl::ToChronoNanoseconds(wait));
    asio::error_code ec;
    co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<absl::StatusOr<SessionWorker>> SessionWorkerPool::Take(absl::Time deadline) {
  if (stopped_) co_return absl::UnavailableError("the server is stopping");
  if (options_.max_sessions == 0) {
    co_return absl::ResourceExhaustedError("direct sessions are off on this server (--max-sessions=0)");
  }
  if (sessions_ >= options_.max_sessions) {
    co_return absl::ResourceExhaustedError(
        absl::StrCat("all ", options_.max_sessions, " direct sessions are taken (--max-sessions)"));
  }
  ++sessions_;
  while (!spares_.empty()) {
    SessionWorker worker = std::move(spares_.back());
    spares_.pop_back();
    if (worker.process->SpokeUnprompted()) {
      const std::string how = co_await pool::HowItEnded(*worker.process, kEndGrace);
      LogWarning("spare session worker ", worker.id, " (pid ", worker.process->pid(), ") ", how,
                 "; starting another");
      continue;
    }
    in_session_[worker.id] = worker.process->pid();
    young_spare_deaths_ = 0;  // it lived to serve
    // The next spare, once kSpareReplacementDelay has passed without this worker coming back.
    replace_at_ = std::max(replace_at_, absl::Now() + kSpareReplacementDelay);
    Kick();
    co_return worker;
  }
  // None ready: wait for the next worker to finish starting (a spare, a start for a waiting
  // session, a worker whose session ended), starting one more if the bound allows. Sessions
  // come faster than spares last: the spares are replaced without delay.
  replace_at_ = absl::InfinitePast();
  Waiter waiter(control_);
  waiters_.push_back(&waiter);
  StartForWaitingSessions();
  // A start that failed at once (no process could be made) has told a session already.
  if (!waiter.worker.has_value() && waiter.failed.ok() && !stopped_) {
    const absl::Duration left = deadline - absl::Now();
    if (deadline == absl::InfiniteFuture()) {
      waiter.wake.expires_at(asio::steady_timer::time_point::max());
    } else {
      waiter.wake.expires_after(absl::ToChronoNanoseconds(std::max(left, absl::ZeroDuration())));
    }
    asio::error_code ec;  // cancelled: woken with an outcome
    co_await waiter.wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  waiters_.erase(std::remove(waiters_.begin(), waiters_.end(), &waiter), waiters_.end());
  if (waiter.worker.has_value() && !stopped_) {
    in_session_[waiter.worker->id] = waiter.worker->process->pid();
    Kick();
    co_return std::move(*waiter.worker);
  }
  --sessions_;
  if (waiter.worker.has_value()) End(std::move(*waiter.worker), EndCause::kStopping);
  if (stopped_) co_return absl::UnavailableError("the server is stopping");
  if (!waiter.failed.ok()) co_return waiter.failed;
  co_return absl::UnavailableError(absl::StrCat(
      "no session worker was ready in time (", starts_in_flight(), " starting, at most ",
      options_.max_parallel_starts, " at once; ", waiters_.size(),
      " other sessions waiting): more --spare-session-workers keep workers ready for bursts"));
}

void SessionWorkerPool::StartForWaitingSessions() {
  // Spares that are starting serve waiting sessions too (Offer).
  while (!stopped_ && starts_in_flight() < options_.max_parallel_starts &&
         static_cast<size_t>(starts_in_flight()) < waiters_.size()) {
    ++starting_for_sessions_;
    asio::co_spawn(control_, StartForWaitingSession(), asio::detached);
  }
}

asio::awaitable<void> SessionWorkerPool::StartForWaitingSession() {
  absl::StatusOr<SessionWorker> started = co_await StartOne();
  --starting_for_sessions_;
  if (started.ok() && stopped_) {
    End(std::move(*started), EndCause::kStopping);
  } else if (started.ok()) {
    consecutive_failures_ = 0;
    Offer(std::move(*started));
  } else if (!waiters_.empty()) {
    // The session it was for is told (it uses the Session stream); the others go on waiting
    // for the starts in progress or a new one, until their deadlines.
    Waiter* waiter = waiters_.front();
    waiters_.pop_front();
    waiter->failed = started.status();
    waiter->wake.cancel();
  }
  StartForWaitingSessions();
  Kick();
}

void SessionWorkerPool::Offer(SessionWorker worker) {
  if (worker.generation < generation_) {
    End(std::move(worker), EndCause::kReload);
    StartForWaitingSessions();
    return;
  }
  if (!waiters_.empty()) {
    Waiter* waiter = waiters_.front();
    waiters_.pop_front();
    young_spare_deaths_ = 0;  // it lived to serve
    waiter->worker = std::move(worker);
    waiter->wake.cancel();
    return;
  }
  if (static_cast<int>(spares_.size()) >= options_.spare_workers) {
    End(std::move(worker), EndCause::kSurplus);
    return;
  }
  AddSpare(std::move(worker));
}

void SessionWorkerPool::Return(SessionWorker worker, bool reusable) {
  --sessions_;
  pool::ProcessWorker& process = *worker.process;
  in_session_.erase(worker.id);
  std::optional<EndCause> end;
  if (!reusable) {
    end = EndCause::kSessionEndedBadly;
  } else if (stopped_) {
    end = EndCause::kStopping;
  } else if (process.SpokeUnprompted()) {
    // It died as its session ended well; the watch it had as a spare saw that while it was
    // away, and would not see it again.
    end = EndCause::kDied;
  } else if (worker.generation < generation_) {
    end = EndCause::kReload;
  } else if (pool::IsNearMemoryCap(process.AddressSpaceBytes(),
                                   process.StartedAddressSpaceBytes(),
                                   options_.memory_cap_bytes)) {
    end = EndCause::kMemory;
  } else if (options_.max_calls_per_worker > 0 &&
             worker.commands >= options_.max_calls_per_worker) {
    end = EndCause::kCalls;
  }
  if (end.has_value()) {
    End(std::move(worker), *end);
    replace_at_ = absl::InfinitePast();  // it will not come back: its spare is due now
  } else {
    Offer(std::move(worker));
  }
  Kick();
}

std::vector<pid_t> SessionWorkerPool::spare_pids() const {
  std::vector<pid_t> pids;
  for (const SessionWorker& spare : spares_) pids.push_back(spare.process->pid());
  return pids;
}

void SessionWorkerPool::Reload() {
  if (options_.max_sessions <= 0) return;  // direct sessions are off: no spare to replace
  // While the last reload's spares start, another now would discard them half-started.
  switch (reloads_.Ask(absl::Now(), reload_running_)) {
    case pool::ReloadRequests::Answer::kMerged:
      LogInfo("reloads of the spare session workers asked for in quick succession: one more "
              "will follow once they stop for ", absl::FormatDuration(options_.reload_quiet));
      Kick();  // KeepSpares learns when it is due
      return;
    case pool::ReloadRequests::Answer::kAlreadyMerged:
      return;
    case pool::ReloadRequests::Answer::kStartNow:
      break;
  }
  ReloadNow();
}

void SessionWorkerPool::ReloadNow() {
  ++generation_;
  reload_running_ = true;
  LogInfo("reloading the spare session workers; workers in a session follow when it ends");
  std::vector<SessionWorker> old = std::move(spares_);
  spares_.clear();
  for (SessionWorker& spare : old) End(std::move(spare), EndCause::kReload);
  replace_at_ = absl::InfinitePast();
  Kick();
}

asio::awaitable<void> SessionWorkerPool::WatchMemory() {
  while (!stopped_) {
    // Spares and workers in a session: at most --max-sessions plus the spares, a file read each.
    int64_t sum = 0, max = 0;
    for (const SessionWorker& spare : spares_) {
      const int64_t bytes = spare.process->ResidentBytes();
      sum += bytes;
      max = std::max(max, bytes);
    }
    for (const auto& [id, pid] : in_session_) {
      const int64_t bytes = pool::ProcessMemoryOf(pid).resident_bytes;
      sum += bytes;
      max = std::max(max, bytes);
    }
    metrics::SessionWorkersResident(sum, max);
    memory_timer_.expires_after(absl::ToChronoNanoseconds(options_.memory_check_interval));
    asio::error_code ec;
    co_await memory_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;  // the pool is going away: touch nothing of it
  }
}

void SessionWorkerPool::StopTaking() {
  RunOnLoop(control_, [this] {
    stopped_ = true;
    // Sessions waiting for a worker are refused now (they use the Session stream), not at
    // their deadlines.
    for (Waiter* waiter : waiters_) waiter->wake.cancel();
    std::vector<SessionWorker> spares = std::move(spares_);
    spares_.clear();
    for (SessionWorker& spare : spares) End(std::move(spare), EndCause::kStopping);
    wake_.cancel();
  });
}

void SessionWorkerPool::Shutdown() {
  RunOnLoop(control_, [this] {
    stopped_ = true;
    for (Waiter* waiter : waiters_) waiter->wake.cancel();
    spares_.clear();
    for (const auto& [id, pid] : in_session_) ::kill(pid, SIGKILL);
    wake_.cancel();
  });
}

}  // namespace cnp::session
