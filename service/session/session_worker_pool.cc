#include "service/session/session_worker_pool.h"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/post.hpp"
#include "asio/redirect_error.hpp"
#include "asio/use_awaitable.hpp"
#include "service/common/log.h"
#include "service/common/run_on_loop.h"
#include "service/pool/pool_options.h"
#include "service/pool/worker.h"

namespace cnp::session {
namespace {

// How long a worker that failed is given to finish dying, so the log can say how it ended.
constexpr absl::Duration kEndGrace = absl::Milliseconds(200);

// Owns a killed worker until its end has been awaited (the process reaped).
asio::awaitable<void> Reap(std::unique_ptr<pool::ProcessWorker> process) {
  co_await process->Ended();
}

}  // namespace

SessionWorkerPool::SessionWorkerPool(SessionPoolOptions options, asio::io_context& control)
    : options_(std::move(options)), control_(control), factory_(options_.command),
      wake_(control) {}

SessionWorkerPool::~SessionWorkerPool() = default;

void SessionWorkerPool::Start() {
  if (options_.max_sessions <= 0) return;
  asio::co_spawn(control_, KeepSpares(), asio::detached);
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
  co_return SessionWorker{std::move(*started), id, generation, absl::Now()};
}

void SessionWorkerPool::End(SessionWorker worker, const char* why) {
  LogInfo("ending session worker ", worker.id, " (pid ", worker.process->pid(), ") because ", why);
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
  asio::error_code ec;
  co_await exited.async_wait(asio::posix::stream_descriptor::wait_read,
                             asio::redirect_error(asio::use_awaitable, ec));
  if (ec || stopped_) co_return;
  auto spare = std::find_if(spares_.begin(), spares_.end(),
                            [id](const SessionWorker& worker) { return worker.id == id; });
  if (spare == spares_.end()) co_return;  // it ended in a session, or a reload ended it
  SessionWorker dead = std::move(*spare);
  spares_.erase(spare);
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
  // Awaited apart from the log line: GCC mishandles a co_await among temporaries.
  const std::string how = co_await dead.process->Ended();
  const std::string when =
      wait > absl::ZeroDuration() ? absl::StrCat(" in ", absl::FormatDuration(wait)) : "";
  LogWarning("spare session worker ", id, " (pid ", dead.process->pid(), ") ", how,
             " while it waited; starting another", when);
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
    if (static_cast<int>(spares_.size()) + starting_spares_ < wanted) {
      if (const absl::Duration backoff = next_start_ - absl::Now(); backoff > absl::ZeroDuration()) {
        wait = backoff;
      } else {
        ++starting_spares_;
        absl::StatusOr<SessionWorker> started = co_await StartOne();
        --starting_spares_;
        if (stopped_) co_return;
        if (started.ok()) {
          consecutive_failures_ = 0;
          if (started->generation == generation_) AddSpare(std::move(*started));
          continue;
        }
        ++consecutive_failures_;
        wait = Backoff(consecutive_failures_);
        next_start_ = absl::Now() + wait;
        LogError(started.status().message(), "; retrying in ", absl::FormatDuration(wait));
      }
    }
    wait = std::min(wait, std::max(reload_due - absl::Now(), absl::ZeroDuration()));
    wake_.expires_after(absl::ToChronoNanoseconds(wait));
    asio::error_code ec;
    co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<absl::StatusOr<SessionWorker>> SessionWorkerPool::Take() {
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
      LogWarning("spare session worker ", worker.id, " (pid ", worker.process->pid(), ") ",
                 co_await pool::HowItEnded(*worker.process, kEndGrace), "; starting another");
      continue;
    }
    in_session_[worker.id] = worker.process->pid();
    young_spare_deaths_ = 0;  // it lived to serve
    Kick();  // start the next spare
    co_return worker;
  }
  absl::StatusOr<SessionWorker> started = co_await StartOne();
  if (!started.ok() || stopped_) {
    --sessions_;
    if (started.ok()) co_return absl::UnavailableError("the server is stopping");
    co_return started.status();
  }
  in_session_[started->id] = started->process->pid();
  Kick();
  co_return started;
}

void SessionWorkerPool::Return(SessionWorker worker, bool reusable) {
  --sessions_;
  pool::ProcessWorker& process = *worker.process;
  in_session_.erase(worker.id);
  const char* why = nullptr;
  if (!reusable) {
    why = "its session ended abnormally";
  } else if (stopped_) {
    why = "the server is stopping";
  } else if (worker.generation < generation_) {
    why = "of a reload";
  } else if (options_.max_resident_bytes > 0 &&
             process.ResidentBytes() > options_.max_resident_bytes) {
    why = "it is over its memory cap";
  } else if (static_cast<int>(spares_.size()) >= options_.spare_workers) {
    why = "enough spares are waiting";
  }
  if (why == nullptr) {
    AddSpare(std::move(worker));
  } else {
    End(std::move(worker), why);
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
  for (SessionWorker& spare : old) End(std::move(spare), "of a reload");
  Kick();
}

void SessionWorkerPool::StopTaking() {
  RunOnLoop(control_, [this] {
    stopped_ = true;
    std::vector<SessionWorker> spares = std::move(spares_);
    spares_.clear();
    for (SessionWorker& spare : spares) End(std::move(spare), "the server is stopping");
    wake_.cancel();
  });
}

void SessionWorkerPool::Shutdown() {
  RunOnLoop(control_, [this] {
    stopped_ = true;
    spares_.clear();
    for (const auto& [id, pid] : in_session_) ::kill(pid, SIGKILL);
    wake_.cancel();
  });
}

}  // namespace cnp::session
