// cnp-server: named Python functions for CouchDB over gRPC.
//
// Threads: the gRPC threads each run one completion queue as an Asio execution context, on
// which every call is a coroutine; one control thread runs the asio loop: the worker pool
// (every worker exchange, supervision), direct sessions and signals; Uploads run on the RPC
// server's own small thread pool; the main thread waits for SIGTERM and then shuts down in
// order: stop accepting, let calls finish, stop the workers.
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <string>
#include <future>
#include <memory>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "asio/signal_set.hpp"
#include "asio/use_awaitable.hpp"
#include "service/common/grpc_log.h"
#include "service/common/log.h"
#include "service/common/every.h"
#include "service/common/log_file_cap.h"
#include "service/common/protobuf_log.h"
#include "service/common/systemd_notify.h"
#include "service/config/server_config.h"
#include "service/metrics/metrics_server.h"
#include "service/pool/async_worker_pool.h"
#include "service/pool/blocking_task_runner.h"
#include "service/pool/process_worker.h"
#include "service/calls/function_calls.h"
#include "service/listen/inherited_sockets.h"
#include "service/rpc/access_log.h"
#include "service/rpc/rpc_server.h"
#include "service/service_wiring.h"

namespace {

// SIGHUP reloads every worker. Each pool merges a storm of them itself (a reload asked for
// while one runs becomes one more after it: service/pool/reload_requests.h), so that 200
// SIGHUPs restart the workers twice, not 200 times, and code changed during the storm is still
// loaded after it. It also reopens the access log, for logrotate's `create` + `kill -HUP`, and
// reads the TLS files and bearer tokens again (credentials rotated without a restart).
asio::awaitable<void> WatchSignals(asio::signal_set& signals, cnp::pool::AsyncWorkerPool& pool,
                                   cnp::session::SessionWorkerPool& sessions,
                                   cnp::session::SessionListener& session_listener,
                                   cnp::rpc::RpcServer& server, std::promise<int>& stop,
                                   std::promise<void>& cut_drain) {
  for (;;) {
    int sig = co_await signals.async_wait(asio::use_awaitable);
    if (sig == SIGHUP) {
      // The listener's first: the server's says "reopened the access log" for both.
      session_listener.ReopenAccessLog();
      server.ReopenAccessLog();
      server.ReloadCredentials();
      pool.ReloadAll();
      sessions.Reload();
      continue;
    }
    stop.set_value(sig);
    break;
  }
  // Stopping: a second SIGTERM (or SIGINT) ends the drain at once.
  while (co_await signals.async_wait(asio::use_awaitable) == SIGHUP) {
  }
  cut_drain.set_value();
}

// How long the sessions cut off at the end of the shutdown grace get to tell their adapters (the
// listener gives a killed worker 200 ms to be reaped, and a frame to an adapter 2 s).
constexpr absl::Duration kCutSessionsTold = absl::Seconds(3);

// Every connection holds a descriptor: take all the operating system allows. The listener caps
// connections below this limit (service/rpc/connection_acceptor.h).
void RaiseOpenFileLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// A server started with stdin, stdout or stderr closed would give those numbers to the first
// files it opens: its log lines would be written into a client's socket, and a worker's end of
// its socket could be the descriptor a worker expects on 3, which dup2 would then leave
// close-on-exec. Each that is closed is /dev/null instead.
void OpenMissingStandardDescriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
    const int null = ::open("/dev/null", O_RDWR);  // the lowest free number: this one
    if (null >= 0 && null != fd) ::close(null);
  }
}

// The housekeeping that may take a few milliseconds or tens of them, done by the main thread
// while it waits (for the stop, then for the drain), off the control loop, whose every worker
// exchange would wait behind it: the heap trimmed every 10 s, the log file looked at every 5 s
// (a copy of --log-max-bytes of it when it is past that).
class Housekeeping {
 public:
  explicit Housekeeping(cnp::LogFileCap* log_cap) : log_cap_(log_cap) {}

  // Waits until `until` is ready or `deadline` has passed; whether it is ready.
  template <typename T>
  bool Wait(std::future<T>& until, absl::Time deadline = absl::InfiniteFuture()) {
    for (;;) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      const auto wait = absl::ToChronoNanoseconds(std::min(left, kLookEvery));
      if (until.wait_for(wait) == std::future_status::ready) return true;
      const absl::Time now = absl::Now();
      if (log_cap_ != nullptr) log_cap_->Check(now);
      if (now >= next_trim_) {
        ::malloc_trim(0);
        next_trim_ = now + kTrimEvery;
      }
    }
  }

 private:
  static constexpr absl::Duration kTrimEvery = absl::Seconds(10);
  static constexpr absl::Duration kLookEvery = absl::Seconds(5);
  cnp::LogFileCap* const log_cap_;
  absl::Time next_trim_ = absl::Now() + kTrimEvery;
};

int Run(int argc, char** argv) {
  OpenMissingStandardDescriptors();
  // The server holds the bearer token, the TLS key and the CouchDB credentials of Uploads in
  // flight: no core dump may write them to disk, and no other process of this user may read
  // this one's memory (ptrace, /proc/PID/mem, /proc/PID/environ). Workers are exec'd, which
  // makes them dumpable again: they hold none of these.
  ::prctl(PR_SET_DUMPABLE, 0);
  ::signal(SIGPIPE, SIG_IGN);
  // SIGHUP is taken first of all: its default ends the process, and a reload that came while
  // the server started (logrotate's postrotate, a certbot hook, `systemctl restart && systemctl
  // reload`) killed it, which the unit's Restart=on-failure takes for a clean stop (an operator
  // probe). It waits in the set and reloads once the server is up. Before main, while the
  // libraries load, no handler can be set: the unit's Type=notify holds reloads until READY=1
  // (systemd_notify.h). SIGTERM and SIGINT keep their default until the pool exists: a server
  // still reading its settings may simply die.
  asio::io_context control(1);
  asio::signal_set signals(control, SIGHUP);
  // Sockets systemd bound for us (cnp-server.socket), and where to tell it we are ready, taken
  // before any thread or worker starts.
  cnp::listen::AdoptInheritedSockets();
  const cnp::SystemdNotifier systemd = cnp::SystemdNotifier::TakeFromEnvironment();
  RaiseOpenFileLimit();
  // Blocks of 1 MiB and more (a big call's request and response) are mapped apart from the heap
  // and go back to the system when freed. Left to itself, glibc raises this threshold to the
  // size of the last big block freed, and the next big call's memory stays with the process.
  ::mallopt(M_MMAP_THRESHOLD, 1 << 20);
  // Debian's abseil checks every lock for deadlock cycles, which showed up in profiles of the
  // per-document path; the pool's locking is simple enough not to need it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Each gRPC thread owns a completion queue (service/grpc_asio/grpc_context.h). With gRPC's default
  // poller, epoll1, any thread may read any connection and must then wake the owner of the
  // call: a hand-off per message (measured: about 8 context switches per CouchDB document in
  // the server instead of 2.5). With "poll", a thread polls the connections of its own queue.
  // An operator's GRPC_POLL_STRATEGY still wins.
  ::setenv("GRPC_POLL_STRATEGY", "poll", /*overwrite=*/0);
  absl::StatusOr<cnp::config::ServerConfig> config = cnp::config::LoadServerConfig(argc, argv);
  if (!config.ok()) {
    std::fprintf(stderr, "cnp-server: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  cnp::LogLevel level;
  if (!cnp::ParseLogLevel(config->log_level, level)) {
    std::fprintf(stderr, "cnp-server: --log-level must be debug, info, warning or error\n");
    return 2;
  }
  cnp::SetLogLevel(level);
  cnp::LogFormat format;
  if (!cnp::ParseLogFormat(config->log_format, format)) {
    std::fprintf(stderr, "cnp-server: --log-format must be text or json\n");
    return 2;
  }
  cnp::SetLogFormat(format);
  cnp::RouteGrpcLogThroughServiceLog();
  // The workers write to this stderr too. On a pipe or a socket (journald's, a pipe to a
  // program) only a write of at most PIPE_BUF bytes is atomic: a longer line of the server's (a
  // function's traceback) could have a worker's line land in the middle of it, and neither
  // would read as a line. Appends to a file do not interleave; the cap stays 16 KiB there.
  if (struct stat err {}; ::fstat(STDERR_FILENO, &err) == 0 &&
                          (S_ISFIFO(err.st_mode) || S_ISSOCK(err.st_mode))) {
    cnp::SetMaxLogLineBytes(PIPE_BUF);
  }
  // protobuf's own lines (a message that does not parse or encode) in this log's format, a few.
  cnp::RouteProtobufLog();

  // Settings only the system can check, checked before any worker starts: a failure is a
  // setting to fix (exit 2, which the unit does not restart), not a start to try again every
  // second. A log file in a directory that does not exist was found after the workers had
  // started, exit 1: systemd restarted the server for ever.
  if (!config->access_log.empty()) {
    if (auto log = cnp::rpc::AccessLog::Open(config->access_log); !log.ok()) {
      const std::string& path = config->access_log;
      const std::string dir = path.rfind('/') == std::string::npos
                                  ? "."
                                  : path.substr(0, std::max<size_t>(path.rfind('/'), 1));
      const bool no_dir = ::access(dir.c_str(), F_OK) != 0;
      // Worded and written as the configuration's own refusals are.
      const absl::Status refused = config->Attributed("access_log", -1, log.status());
      std::fprintf(stderr, "cnp-server: %s%s\n", std::string(refused.message()).c_str(),
                   no_dir ? absl::StrCat(" (create ", dir, ", writable by the server's user; "
                                         "the packaged unit's LogsDirectory=cnp makes "
                                         "/var/log/cnp)").c_str()
                          : "");
      return 2;
    }
  }
  if (absl::Status named = cnp::CheckInheritedSocketsNamed(*config); !named.ok()) {
    std::fprintf(stderr, "cnp-server: %s\n", std::string(named.message()).c_str());
    return 2;
  }
  // A socket directory missing its parent, others may write to or another user owns was found
  // once the workers had started (exit 1, restarted every second by the unit).
  if (absl::Status dirs = cnp::PrepareSocketDirectories(*config); !dirs.ok()) {
    std::fprintf(stderr, "cnp-server: %s\n", std::string(dirs.message()).c_str());
    return 2;
  }

  cnp::pool::PoolOptions pool_options;
  pool_options.workers = config->workers;
  pool_options.max_queue = config->max_queue;
  pool_options.startup_timeout = config->worker_start_timeout;
  pool_options.max_calls_per_worker = config->max_calls_per_worker;
  pool_options.memory_cap_bytes = config->worker_memory_mb << 20;
  // No task's reply is read past what a call may carry (a worker stops building it there).
  pool_options.max_answer_bytes = config->max_call_bytes;
  // The pool lives on the control context; the RPC handlers (the CouchDB stream session
  // included) await it, and Upload, which blocks on the server's upload threads, reaches it
  // through the blocking facade.
  cnp::pool::AsyncWorkerPool pool(
      pool_options,
      std::make_unique<cnp::pool::ProcessWorkerFactory>(
          cnp::pool::WorkerCommand{config->worker_binary, config->WorkerArgs()}),
      control);
  cnp::pool::BlockingTaskRunner blocking_pool(pool, control);
  cnp::session::SessionWorkerPool sessions(cnp::SessionPoolOptionsFor(*config), control);
  cnp::session::SessionListener session_listener(cnp::SessionListenerOptionsFor(*config),
                                                 sessions, control);

  // Taken from here on; signals that come before the server has started wait in the set for
  // WatchSignals, which starts once the access log it reopens exists.
  signals.add(SIGTERM);
  signals.add(SIGINT);
  std::promise<int> stop;
  std::promise<void> cut_drain;
  // Memory freed when connections and sessions end stays with the process until the heap is
  // trimmed (a big Map call trims when it is sent), and the log file is kept to its cap: both
  // are done by the main thread while it waits for the stop and the drain (Housekeeping).
  std::optional<cnp::LogFileCap> log_cap;
  if (config->log_max_bytes > 0) log_cap.emplace(STDERR_FILENO, config->log_max_bytes);

  cnp::LogInfo("starting ", config->workers, " workers (", config->worker_binary, " ",
               absl::StrJoin(config->WorkerArgs(), " "), ")");
  // Under Type=notify systemd gives the start TimeoutStartSec (90 s unless set), where the
  // workers, started together, may each take --worker-start-timeout (a slow --preload-module
  // import): a start allowed 120 s was ended at 90 s and started again, for ever (a review).
  systemd.Notify(absl::StrCat(
      "EXTEND_TIMEOUT_USEC=",
      absl::ToInt64Microseconds(config->worker_start_timeout + absl::Seconds(60))));
  if (absl::Status s = pool.Start(); !s.ok()) {
    cnp::LogError(s.message());
    // A setting no worker takes is a bad setting like any other: exit 2, which the unit's
    // RestartPreventExitStatus leaves down until it is fixed.
    return absl::IsInvalidArgument(s) ? 2 : 1;
  }
  if (sessions.max_sessions() == 0 && config->max_sessions > 0) {
    cnp::LogInfo("no direct sessions: they come through a unix --listen, and there is none; "
                 "adapters are served over the Session stream");
  }
  sessions.Start();
  auto guard = asio::make_work_guard(control);
  std::thread control_thread([&control] { control.run(); });

  cnp::calls::FunctionCalls calls(pool, {.call_timeout = config->call_timeout,
                                         .max_docs_per_call = config->max_docs_per_call,
                                         .max_call_bytes = config->max_call_bytes});
  cnp::rpc::ServerOptions server_options{
      .listen = config->listen,
      .security = {.tls_cert_file = config->tls_cert,
                   .tls_key_file = config->tls_key,
                   .tls_client_ca_file = config->tls_client_ca,
                   .auth_token_file = config->auth_token_file,
                   .insecure = config->insecure,
                   .socket_gid = config->socket_gid,
                   .allowed_uids = config->allow_uid,
                   .access_log = config->access_log},
      .threads = config->grpc_threads,
      .max_waiting_uploads = config->max_waiting_uploads,
      .upload_write_timeout = config->call_timeout,
      .max_message_bytes = static_cast<int>(config->max_call_bytes),
      .max_grpc_memory_bytes = config->max_grpc_memory,
      .max_connections_per_peer = config->max_connections_per_peer,
      .first_call_timeout = config->first_call_timeout,
      .max_connection_idle = config->max_connection_idle,
      .reflection = config->reflection};
  cnp::rpc::RpcServer server(server_options, calls, cnp::MakeSessionFactory(pool, *config),
                             cnp::MakeUploadHandler(blocking_pool, *config));
  int exit_code = 0;
  // The direct-session socket first: an adapter that finds the gRPC socket accepting takes
  // the server as started and offers its session on P.direct at once, without the launch
  // lock, so P.direct must already be there (found by a review: 2 adapters in 180, started
  // with the server, exited 1 finding no P.direct). With --max-sessions=0 it binds nothing,
  // but still answers on a P.direct systemd passed.
  absl::Status started = session_listener.Start();
  if (started.ok()) started = server.Start();
  cnp::metrics::MetricsServer metrics_server;
  if (config->metrics_public && config->metrics_listen.empty()) {
    cnp::LogWarning("--metrics-public is set, but there is no --metrics-listen: no metrics are "
                    "served");
  }
  if (started.ok() && !config->metrics_listen.empty()) {
    started = metrics_server.Start(config->metrics_listen,
                                   config->metrics_public || config->insecure);
    if (started.ok()) {
      cnp::LogInfo("metrics on http://", config->metrics_listen, "/metrics (port ",
                   metrics_server.port(), ")");
    }
  }
  // A socket systemd passed that no address took would hold its clients for ever.
  if (started.ok()) started = cnp::listen::CheckEveryInheritedSocketTaken();
  if (!started.ok()) {
    session_listener.Stop();
    (void)server.Shutdown(absl::ZeroDuration());  // no call was served yet
  }
  if (!started.ok()) {
    cnp::LogError(started.message());
    exit_code = 1;
  } else {
    asio::co_spawn(control,
                   WatchSignals(signals, pool, sessions, session_listener, server, stop,
                                cut_drain),
                   asio::detached);
    // On the control loop, as SIGHUP's reloads: the two never run at once.
    asio::co_spawn(control, cnp::Every(std::chrono::minutes(1), [&server] {
                     server.FollowTlsFiles();
                     return true;
                   }),
                   asio::detached);
    cnp::LogInfo("ready");
    systemd.Notify("READY=1");
    if (config->ready_fd >= 0) {
      (void)!::write(config->ready_fd, "ready\n", 6);
      ::close(config->ready_fd);
    }
    // Adapters waiting to start a server find this one listening once they get the lock.
    if (config->launch_lock_fd >= 0) ::close(config->launch_lock_fd);
    Housekeeping housekeeping(log_cap ? &*log_cap : nullptr);
    std::future<int> stopped = stop.get_future();
    housekeeping.Wait(stopped);
    const int sig = stopped.get();
    systemd.Notify("STOPPING=1");
    if (config->drain_delay > absl::ZeroDuration()) {
      // Health first: balancers stop sending new calls while the ones they sent are served.
      server.SetServing(false);
      cnp::LogInfo(strsignal(sig), ": draining - health reports NOT_SERVING, calls are still "
                   "served for ", absl::FormatDuration(config->drain_delay),
                   " (another SIGTERM ends the drain)");
      std::future<void> cut = cut_drain.get_future();
      housekeeping.Wait(cut, absl::Now() + config->drain_delay);
    }
    const absl::Time grace_end = absl::Now() + config->shutdown_grace;
    cnp::LogInfo(strsignal(sig), ": no new calls; waiting up to ",
                 absl::FormatDuration(config->shutdown_grace),
                 " for calls in flight and for the commands direct sessions are serving");
    // Direct sessions drain with the calls, in the same grace: none starts now, and each ends
    // once its command in flight is answered (its adapter exits 0, CouchDB starts another).
    session_listener.Stop();
    sessions.StopTaking();
    session_listener.DrainSessions();
    // Past the grace the pool kills the workers still computing, so their calls end at once.
    if (!server.Shutdown(config->shutdown_grace, [&pool] { pool.Shutdown(); })) {
      // A call stuck where it cannot see its cancellation still refers to the server's
      // contexts: destroying them would be a use after free. The workers die with us
      // (PR_SET_PDEATHSIG).
      cnp::LogError("stopped with calls still running");
      std::fflush(nullptr);
      ::_exit(1);
    }
    if (!session_listener.AwaitSessionsEnd(grace_end)) {
      // Past the grace, as for calls: the session workers still computing are killed, and
      // their adapters write CouchDB an error for the command cut off before they exit.
      session_listener.CutSessions();
      sessions.Shutdown();
      (void)session_listener.AwaitSessionsEnd(absl::Now() + kCutSessionsTold);
    }
  }
  sessions.Shutdown();
  pool.Shutdown();
  guard.reset();
  control.stop();
  control_thread.join();
  cnp::LogInfo("stopped");
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
