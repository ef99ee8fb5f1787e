#include "service/session/session_listener.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <string_view>
#include <optional>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/buffer.hpp"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/experimental/as_tuple.hpp"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/post.hpp"
#include "asio/read.hpp"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"
#include "asio/write.hpp"
#include "service/common/fd_passing.h"
#include "service/common/framing.h"
#include "service/common/function_errors.h"
#include "service/common/log.h"
#include "service/common/run_on_loop.h"
#include "service/common/shared_flag.h"
#include "service/common/socket_users.h"
#include "service/couchdb/json_text.h"
#include "service/couchdb/query_config.h"
#include "service/listen/descriptor_cap.h"
#include "service/listen/inherited_sockets.h"
#include "service/listen/listening_socket.h"
#include "service/metrics/service_metrics.h"
#include "service/pool/process_worker.h"
#include "service/pool/worker.h"
#include "service/session/launch_settings.h"
#include "session.pb.h"

namespace cnp::session {
namespace {

using asio::local::stream_protocol;
using v1::Answer;
using v1::Ended;

// How long the server may take to write a small frame to an adapter: a few hundred bytes on a
// local socket. Awaited on the control loop, each connection with its own timer, as the hello
// is (ListenerOptions::hello_timeout), so a stalled adapter holds only its own connection.
constexpr absl::Duration kSmallFrameWait = absl::Seconds(2);

// A real hello is the adapter's pid, two numbers and its launch settings (launch_settings.h:
// its --python-path entries and --allow-module names), a few hundred bytes for any
// configuration seen. 64 KiB leaves room for many long paths and modules; past it a peer is
// broken or hostile, and its hello is not waited for. The buffer grows as the bytes arrive
// (ReadHello), so a header that only announces this much costs nothing.
constexpr uint32_t kMaxHelloBytes = 64 << 10;
// The descriptors a hello carries: CouchDB's two pipes. A surplus drops the connection at once:
// a peer could otherwise plant descriptors in the server for as long as its hello may take.
constexpr size_t kHelloDescriptors = 2;
// Connections accepted whose hello is not whole yet. Each holds its connection, the
// descriptors it sent and its hello so far for up to ListenerOptions::hello_timeout; a real
// adapter sends its hello in one sendmsg() right after it connects, so even CouchDB starting
// its os_process_limit of query servers at once (100 by default, but per node and spread over
// a moment) leaves few pending at any time. One past the cap is told AT_CAPACITY at once, and
// its adapter uses the Session stream.
constexpr int kMaxPendingHellos = 64;
// The settings a hello differed by that the listener remembers having reported (a digest of
// each, oldest forgotten first), and how often such a report may be logged at most. An adapter
// names its settings in every hello; any local user allowed on the socket may send hellos, so
// neither what is kept nor what is logged may grow with what they send.
constexpr size_t kReportedSettingsKept = 16;
constexpr absl::Duration kSettingsReportInterval = absl::Seconds(10);
// How much of a settings line a log line quotes.
constexpr size_t kSettingsQuoted = 256;

// How long a worker whose session failed is given to finish dying, so the log and the adapter
// can say how it ended (a crashing process closes its socket a moment before it can be reaped).
constexpr absl::Duration kWorkerEndGrace = absl::Milliseconds(200);

// How long a worker is given to report the end of its input once its adapter has gone: at
// CouchDB's normal end of a query server both happen at once.
constexpr absl::Duration kAdapterGoneGrace = absl::Seconds(2);
// How long an adapter that does not say (Hello.answer_within_ms) waits for the answer: its
// 4.5 s for the whole offer, from before it connected.
constexpr absl::Duration kOlderAdapterWait = absl::Seconds(4);
// Time for the answer to reach the adapter, and for a loaded machine to run it.
constexpr absl::Duration kAnswerMargin = absl::Milliseconds(300);
// The longest a new session waits for a worker, however long its adapter would wait: CouchDB's
// timeout for its first command (5 s by default) runs from the adapter's start, and a session
// that gets no worker still needs time to be answered over the Session stream. A worker starts
// in well under a second; when none is ready in this long, starts are queued behind a burst.
constexpr absl::Duration kLongestWorkerWait = absl::Seconds(2);

// Worker exit status for a command that outran CouchDB's timeout (worker.proto).
constexpr int kSessionTimeoutExit = worker::v1::SESSION_TIMEOUT_EXIT;
constexpr int kSessionCallTimeoutExit = worker::v1::SESSION_CALL_TIMEOUT_EXIT;

// Closes the descriptors received with the hello when the connection's coroutine is done with
// them (the worker has its own copies by then).
class ReceivedDescriptors {
 public:
  explicit ReceivedDescriptors(std::vector<int> fds) : fds_(std::move(fds)) {}
  ~ReceivedDescriptors() {
    for (int fd : fds_) ::close(fd);
  }
  ReceivedDescriptors(const ReceivedDescriptors&) = delete;
  ReceivedDescriptors& operator=(const ReceivedDescriptors&) = delete;
  const std::vector<int>& get() const { return fds_; }

 private:
  std::vector<int> fds_;
};

// Reads the adapter's hello frame, awaiting each part's arrival: its first bytes come with
// CouchDB's pipes (a recvmsg that collects them into `fds`, which the caller owns), the rest is
// an ordinary read. Unbounded here: the caller races it against the connection's timer. The
// errors' messages are few and fixed (the drop's access-log line counts drops of one reason
// together); `announced` says the length the header gave.
asio::awaitable<absl::Status> ReadHello(stream_protocol::socket& socket, std::string& payload,
                                        std::vector<int>& fds, uint32_t& announced) {
  char header[kFrameHeaderBytes];
  size_t got = 0;
  asio::error_code ec;
  while (got < sizeof header) {
    absl::StatusOr<size_t> n =
        ReceiveWithDescriptors(socket.native_handle(), header + got, sizeof header - got, fds);
    if (!n.ok()) co_return n.status();
    if (fds.size() > kHelloDescriptors) {
      co_return absl::DataLossError(
          absl::StrCat("more than the ", kHelloDescriptors, " descriptors a hello carries"));
    }
    got += *n;
    if (*n == 0) {
      co_await socket.async_wait(stream_protocol::socket::wait_read,
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return absl::UnavailableError(absl::StrCat("waiting for it: ", ec.message()));
    }
  }
  announced = DecodeFrameLength(header);
  if (announced > kMaxHelloBytes) {
    co_return absl::DataLossError(
        absl::StrCat("a hello longer than the ", kMaxHelloBytes, " bytes one may have"));
  }
  // Grown as the bytes arrive, never sized to what the header claims: a peer that announces
  // the most and sends nothing costs no more than its connection.
  payload.clear();
  char chunk[1024];
  while (payload.size() < announced) {
    const size_t n = co_await socket.async_read_some(
        asio::buffer(chunk, std::min<size_t>(sizeof chunk, announced - payload.size())),
        asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return absl::UnavailableError(absl::StrCat("reading it: ", ec.message()));
    payload.append(chunk, n);
  }
  co_return absl::OkStatus();
}

// The hello, or why there is none: a peer that has not sent it within `timeout` loses its
// connection (its timer, not the loop, does the waiting).
asio::awaitable<absl::Status> ReadHelloInTime(stream_protocol::socket& socket,
                                              std::string& payload, std::vector<int>& fds,
                                              uint32_t& announced, absl::Duration timeout) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(co_await asio::this_coro::executor,
                              absl::ToChronoNanoseconds(timeout));
  std::variant<absl::Status, std::monostate> read = co_await (
      ReadHello(socket, payload, fds, announced) || deadline.async_wait(asio::use_awaitable));
  if (read.index() == 1) {
    co_return absl::DeadlineExceededError(
        absl::StrCat("no whole hello within ", absl::FormatDuration(timeout)));
  }
  co_return std::get<0>(read);
}

// Writes one frame to the adapter, awaited on the loop for at most kSmallFrameWait. The adapter
// may be gone, or stalled with its socket full; either way there is nothing to do about it.
asio::awaitable<void> Send(stream_protocol::socket& socket,
                           const google::protobuf::MessageLite& message) {
  using namespace asio::experimental::awaitable_operators;
  std::string frame(kFrameHeaderBytes, '\0');
  message.AppendToString(&frame);
  EncodeFrameLength(static_cast<uint32_t>(frame.size() - kFrameHeaderBytes), frame.data());
  asio::steady_timer deadline(co_await asio::this_coro::executor,
                              absl::ToChronoNanoseconds(kSmallFrameWait));
  co_await (asio::async_write(socket, asio::buffer(frame),
                              asio::experimental::as_tuple(asio::use_awaitable)) ||
            deadline.async_wait(asio::experimental::as_tuple(asio::use_awaitable)));
}

// Tells a connection refused before its hello is read that it is AT_CAPACITY (its adapter then
// uses the Session stream), in a send that never waits: nothing has been read of it, nor is
// its uid checked, so the answer says nothing of the server. The connection closes with
// `socket` (the caller's).
void AnswerAtCapacityAtOnce(stream_protocol::socket& socket, absl::string_view reason) {
  Answer answer;
  answer.set_outcome(Answer::AT_CAPACITY);
  answer.set_reason(std::string(reason));
  std::string frame(kFrameHeaderBytes, '\0');
  answer.AppendToString(&frame);
  EncodeFrameLength(static_cast<uint32_t>(frame.size() - kFrameHeaderBytes), frame.data());
  // A fresh connection's buffer has room for it; if not, the close alone tells the adapter.
  [[maybe_unused]] const ssize_t sent = ::send(socket.native_handle(), frame.data(), frame.size(),
                                               MSG_DONTWAIT | MSG_NOSIGNAL);
}

// The settings line as a log line quotes it: any local user allowed on the socket chooses it.
std::string Quoted(absl::string_view settings) {
  if (settings.size() <= kSettingsQuoted) return std::string(settings);
  return absl::StrCat(settings.substr(0, kSettingsQuoted), "... (", settings.size(), " bytes)");
}

// A direct session's function errors, as its worker counted them (function_error_tally.h),
// into cnp_function_errors_total. Only what the frame's bounds allow is taken
// (service/common/function_errors.h): the metric's memory is the server's, whatever a worker
// sends.
void CountProgress(const worker::v1::SessionProgress& progress, const std::string& id) {
  int taken = 0;
  bool ignored = false;
  for (const worker::v1::FunctionErrorCount& entry : progress.function_errors()) {
    if (taken == kMaxProgressFunctions || entry.function().size() > kMaxProgressNameBytes) {
      ignored = true;
      continue;
    }
    ++taken;
    metrics::FunctionError(entry.function(), entry.count());
  }
  if (ignored) {
    LogWarning("direct session ", id, ": its worker reported function errors past the bounds of "
               "a progress frame (", kMaxProgressFunctions, " functions, names of at most ",
               kMaxProgressNameBytes, " bytes); those were not counted");
  }
}

}  // namespace

// A session's place in Sessions::live for as long as its coroutine serves it.
class SessionListener::Registration {
 public:
  Registration(std::shared_ptr<Sessions> sessions, pid_t worker_pid)
      : sessions_(std::move(sessions)) {
    session_.worker_pid = worker_pid;
    absl::MutexLock lock(&sessions_->mu);
    sessions_->live.insert(&session_);
  }
  ~Registration() {
    absl::MutexLock lock(&sessions_->mu);
    sessions_->live.erase(&session_);
  }
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;

  // The worker said it took the session: it may be asked to end it from now on.
  void Started() {
    absl::MutexLock lock(&sessions_->mu);
    session_.started = true;
    sessions_->AskToStop(session_);
  }
  // The session is over (the worker may be reaped next): no signal goes to its pid any more.
  void Over() {
    absl::MutexLock lock(&sessions_->mu);
    session_.started = false;
  }
  bool draining() const {
    absl::MutexLock lock(&sessions_->mu);
    return sessions_->draining;
  }
  bool cut() const {
    absl::MutexLock lock(&sessions_->mu);
    return sessions_->cut;
  }

 private:
  const std::shared_ptr<Sessions> sessions_;
  LiveSession session_;
};

// A connection counted in pending_hellos_ from its accept until its hello is read (or it is
// dropped). Shared with the count, which the connection's coroutine may outlive the listener
// with.
class SessionListener::PendingHello {
 public:
  explicit PendingHello(std::shared_ptr<int> count) : count_(std::move(count)) { ++*count_; }
  ~PendingHello() { Done(); }
  PendingHello(PendingHello&& other) noexcept : count_(std::move(other.count_)) {}
  PendingHello& operator=(PendingHello&&) = delete;
  void Done() {
    if (count_ != nullptr) --*count_;
    count_.reset();
  }

 private:
  std::shared_ptr<int> count_;
};

void SessionListener::Sessions::AskToStop(LiveSession& session) {
  if (!draining || !session.started || session.stop_sent) return;
  session.stop_sent = true;
  ::kill(session.worker_pid, SIGTERM);
}

void SessionListener::DrainSessions() {
  absl::MutexLock lock(&sessions_->mu);
  sessions_->draining = true;
  for (LiveSession* session : sessions_->live) sessions_->AskToStop(*session);
  if (!sessions_->live.empty()) {
    LogInfo("stopping: ", sessions_->live.size(),
            " direct sessions end once the command each is serving, if any, is answered");
  }
}

bool SessionListener::AwaitSessionsEnd(absl::Time deadline) {
  absl::MutexLock lock(&sessions_->mu);
  auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(sessions_->mu) {
    return sessions_->live.empty();
  };
  return sessions_->mu.AwaitWithDeadline(absl::Condition(&none), deadline);
}

void SessionListener::CutSessions() {
  absl::MutexLock lock(&sessions_->mu);
  sessions_->cut = true;
  if (!sessions_->live.empty()) {
    LogWarning(sessions_->live.size(),
               " direct sessions still busy after the shutdown grace: ending them");
  }
}

SessionListener::SessionListener(ListenerOptions options, SessionWorkerPool& pool,
                                 asio::io_context& control)
    : options_(std::move(options)), users_(UnixSocketUsers(options_.allowed_uids)), pool_(pool),
      control_(control) {}

SessionListener::~SessionListener() = default;

void SessionListener::ReopenAccessLog() {
  if (access_log_ == nullptr || options_.access_log.empty()) return;
  // RpcServer's reopen says it in the log; only a failure is this one's to say.
  if (absl::Status reopened = access_log_->Reopen(); !reopened.ok()) {
    LogError(reopened.message(), "; direct-session refusals go on in the file opened before");
  }
}

absl::Status SessionListener::Start() {
  descriptor_cap_ = listen::DescriptorCapForLimit();
  if (!options_.paths.empty()) {
    absl::StatusOr<std::unique_ptr<rpc::AccessLog>> log = rpc::AccessLog::Open(options_.access_log);
    if (!log.ok()) return log.status();
    access_log_ = *std::move(log);
    refusals_ = std::make_unique<rpc::RefusalLog>(*access_log_, rpc::kRefusalLogInterval);
    flush_timer_ = std::make_unique<asio::steady_timer>(control_);
    asio::co_spawn(control_, FlushRefusals(), asio::detached);
  }
  for (const std::string& path : options_.paths) {
    absl::StatusOr<listen::ListeningSocket> socket;
    if (pool_.max_sessions() == 0) {
      // Off: no socket of our own. But closing one systemd passed would not help: systemd
      // keeps its own copy listening, so adapters would connect and wait for an answer that
      // never comes. Each is told to use the stream.
      const int fd = listen::TakeInheritedUnixSocket(path);
      if (fd < 0) continue;
      LogInfo("direct sessions are off (--max-sessions=0): unix:", path,
              ", passed by systemd, tells every adapter to use the Session stream");
      socket = listen::ListeningSocket{
          .fd = fd, .address = "unix:" + path, .is_unix = true, .unix_path = path,
          .inherited = true};
    } else {
      // The gRPC socket's rules (service/listen/listening_socket.h): the same mode and group,
      // a stale file replaced, a live server's never.
      socket = listen::OpenUnixListeningSocket(absl::StrCat("unix:", path), path,
                                               {.gid = options_.socket_gid});
      if (!socket.ok()) {
        return absl::Status(socket.status().code(),
                            absl::StrCat("direct sessions: ", socket.status().message()));
      }
      LogInfo("direct sessions on unix:", path,
              socket->inherited ? " (passed by systemd; up to " : " (up to ",
              pool_.max_sessions(), ")");
    }
    auto acceptor = std::make_unique<stream_protocol::acceptor>(control_);
    asio::error_code ec;
    acceptor->assign(stream_protocol(), socket->fd, ec);
    if (ec) {
      ::close(socket->fd);
      listen::RemoveOwnSocketFile(*socket);
      return absl::UnavailableError(absl::StrCat(
          "cannot accept direct sessions on ", path, ": ", ec.message()));
    }
    asio::co_spawn(control_, Accept(*acceptor), asio::detached);
    acceptors_.push_back(std::move(acceptor));
    sockets_.push_back(*std::move(socket));
  }
  return absl::OkStatus();
}

void SessionListener::Stop() {
  // On the control loop: the acceptors are its coroutines'.
  RunOnLoop(control_, [this] {
    if (flush_timer_ != nullptr) flush_timer_->cancel();
    for (auto& acceptor : acceptors_) {
      asio::error_code ignored;
      acceptor->close(ignored);
    }
    // The timer's flush will not come again: the counts of the last interval now or never.
    if (refusals_ != nullptr) refusals_->FlushAll();
    // Only the files we created and that are still ours: not systemd's, nor one another
    // server has put at the path since.
    for (const listen::ListeningSocket& socket : sockets_) listen::RemoveOwnSocketFile(socket);
  });
}

bool SessionListener::Allowed(uid_t uid) const {
  return users_.count(uid) != 0;
}

asio::awaitable<void> SessionListener::FlushRefusals() {
  for (;;) {
    flush_timer_->expires_after(rpc::kRefusalLogInterval);
    asio::error_code ec;
    co_await flush_timer_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;  // Stop(): the listener may be gone once this resumes
    refusals_->Flush();
  }
}

bool SessionListener::FirstReport(absl::string_view settings) {
  // A digest, not the line: a hello's settings may be as long as the hello.
  const size_t digest =
      std::hash<std::string_view>()(std::string_view(settings.data(), settings.size()));
  if (std::find(reported_settings_.begin(), reported_settings_.end(), digest) !=
      reported_settings_.end()) {
    return false;
  }
  const absl::Time now = absl::Now();
  if (now < next_settings_report_) {
    // Too soon after the last report: counted, and said by the next one. Not remembered, so
    // that it is reported once the interval is over.
    ++settings_reports_unlogged_;
    return false;
  }
  next_settings_report_ = now + kSettingsReportInterval;
  if (reported_settings_.size() == kReportedSettingsKept) reported_settings_.pop_front();
  reported_settings_.push_back(digest);
  return true;
}

std::string SessionListener::SettingsReportsUnlogged() {
  if (settings_reports_unlogged_ == 0) return "";
  std::string more = absl::StrCat(" (and ", settings_reports_unlogged_,
                                  " other settings reports since the last, not logged)");
  settings_reports_unlogged_ = 0;
  return more;
}

asio::awaitable<void> SessionListener::Accept(stream_protocol::acceptor& acceptor) {
  for (;;) {
    auto [ec, socket] =
        co_await acceptor.async_accept(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // Out of descriptors, most likely: back off instead of spinning until some are freed.
      LogWarning("direct-session accept failed: ", ec.message(), "; retrying in 100 ms");
      asio::steady_timer pause(control_, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
      continue;
    }
    // As the gRPC listener's connections (connection_acceptor.h): a connection whose
    // descriptor reaches the cap is closed at once, so that a flood of them leaves the
    // descriptors calls, workers and their pipes need. Those that have not sent their hello
    // yet are capped too: each may hold the descriptors it sent for the hello's timeout.
    const int fd = socket.native_handle();
    if (fd >= descriptor_cap_ || *pending_hellos_ >= kMaxPendingHellos) {
      const std::string reason =
          fd >= descriptor_cap_
              ? absl::StrCat("too many open connections (descriptor cap ", descriptor_cap_,
                             " below the open-files limit)")
              : absl::StrCat("too many connections still sending their hellos (at most ",
                             kMaxPendingHellos, " at once)");
      ucred peer{};
      socklen_t peer_size = sizeof peer;
      ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_size);
      const std::string where = absl::StrCat("unix:", socket.local_endpoint(ec).path());
      const std::string uid = absl::StrCat(peer.uid);
      // Logged before the connection closes: once an adapter sees it closed, the line is there.
      refusals_->Refused("refused", absl::StrCat(where, " uid ", uid), where, reason,
                         {{"peer_uid", uid, true}, {"peer_pid", absl::StrCat(peer.pid), true}});
      AnswerAtCapacityAtOnce(socket, reason);
      continue;
    }
    asio::co_spawn(control_, Serve(std::move(socket), PendingHello(pending_hellos_)),
                   asio::detached);
  }
}

asio::awaitable<void> SessionListener::Serve(stream_protocol::socket socket,
                                             PendingHello pending) {
  using namespace asio::experimental::awaitable_operators;
  asio::error_code ec;
  socket.native_non_blocking(true, ec);
  const int fd = socket.native_handle();
  Answer answer;

  ucred peer{};
  socklen_t peer_size = sizeof peer;
  // An accepted unix socket's own name is its listener's path.
  const std::string where = absl::StrCat("unix:", socket.local_endpoint(ec).path());
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_size) != 0 || !Allowed(peer.uid)) {
    std::string why = absl::StrCat("uid ", peer.uid, " (pid ", peer.pid,
                                   ") may not use this cnp-server, which runs as uid ", ::getuid(),
                                   "; run the adapter as that user or allow it with --allow-uid");
    const std::string uid = absl::StrCat(peer.uid);
    refusals_->Refused("refused", absl::StrCat(where, " uid ", uid), where,
                       "uid not allowed (see --allow-uid)",
                       {{"peer_uid", uid, true}, {"peer_pid", absl::StrCat(peer.pid), true}});
    // The reason only: the server's pid and the settings an adapter launched it with (its
    // --python-path and --allow-module) are for the users it serves.
    answer.set_outcome(Answer::REFUSED);
    answer.set_reason(why);
    co_await Send(socket, answer);
    co_return;
  }
  answer.set_server_pid(::getpid());
  answer.set_started_by_adapter(!options_.adapter_settings.empty());
  answer.set_settings(options_.adapter_settings);

  // The adapter sends its hello in one sendmsg() right after connecting, so it is all there at
  // once; the deadline only bounds a broken or stalled peer of an allowed uid.
  std::string payload;
  std::vector<int> fds;
  uint32_t announced = 0;
  absl::Status read =
      co_await ReadHelloInTime(socket, payload, fds, announced, options_.hello_timeout);
  pending.Done();
  const absl::Time hello_read_at = absl::Now();
  ReceivedDescriptors pipes(std::move(fds));
  v1::Hello hello;
  if (!read.ok() || !hello.ParseFromString(payload) ||
      pipes.get().size() != (hello.settings_only() ? 0u : 2u)) {
    // Through the refusal log, one line per user and reason per interval: any user allowed
    // on the socket could otherwise write a line per connection it opens.
    const std::string uid = absl::StrCat(peer.uid);
    refusals_->Refused(
        "closed", absl::StrCat(where, " uid ", uid), where,
        read.ok() ? "a malformed hello (it must carry two descriptors, or none if it asks "
                    "for the settings only)"
                  : read.message(),
        {{"peer_uid", uid, true},
         {"peer_pid", absl::StrCat(peer.pid), true},
         {"hello_bytes", absl::StrCat(announced), true}});
    co_return;
  }

  // Settings: an adapter-started server with other settings than this adapter's is replaced by
  // the adapter; an operator's server is never replaced, and the difference is reported once.
  if (!hello.settings().empty()) {
    if (answer.started_by_adapter() && hello.settings() != options_.adapter_settings) {
      if (FirstReport(hello.settings())) {
        LogWarning("an adapter (pid ", hello.adapter_pid(), ") wants other settings (",
                   Quoted(hello.settings()), ") than this server was started with (",
                   Quoted(options_.adapter_settings), "): it will replace this server",
                   SettingsReportsUnlogged());
      }
      answer.set_outcome(Answer::SETTINGS_DIFFER);
      answer.set_reason("this server was started by an adapter with other settings");
      co_await Send(socket, answer);
      co_return;
    }
    // An adapter given none of the settings asks for none: nothing to report about it.
    static const std::string kNoSettings =
        LaunchSettingsText({}, {}, 0, {}, kAdapterCallTimeout);
    if (!answer.started_by_adapter() && hello.settings() != options_.own_settings &&
        hello.settings() != kNoSettings && FirstReport(hello.settings())) {
      LogWarning("adapters ask for settings (", Quoted(hello.settings()),
                 ") other than this server's (", Quoted(options_.own_settings),
                 "); it was started by the operator, so it keeps its own",
                 SettingsReportsUnlogged());
      answer.set_report_settings_mismatch(true);
    }
  }

  if (hello.settings_only()) {
    answer.set_outcome(Answer::SETTINGS_AGREE);
    co_await Send(socket, answer);
    co_return;
  }

  // Answered within the adapter's wait, less a margin for the answer to reach it: past that
  // wait the adapter gives up on CouchDB's pipes too, and CouchDB's request fails.
  const absl::Duration adapter_waits = hello.answer_within_ms() > 0
                                           ? absl::Milliseconds(hello.answer_within_ms())
                                           : kOlderAdapterWait;
  const absl::Time take_by =
      hello_read_at + std::min(adapter_waits - kAnswerMargin, kLongestWorkerWait);
  absl::StatusOr<SessionWorker> taken = co_await pool_.Take(take_by);
  if (!taken.ok()) {
    answer.set_outcome(absl::IsResourceExhausted(taken.status()) ? Answer::AT_CAPACITY
                                                                  : Answer::UNAVAILABLE);
    answer.set_reason(std::string(taken.status().message()));
    LogInfo("direct session for adapter pid ", hello.adapter_pid(),
            " not started: ", taken.status().message(), "; it uses the Session stream");
    co_await Send(socket, answer);
    co_return;
  }
  SessionWorker worker = std::move(*taken);
  pool::ProcessWorker& process = *worker.process;
  // Starting a worker may have taken longer than the adapter would wait: if it gave up (and
  // CouchDB with it), the pipes must not go to a worker.
  if (pollfd gone{fd, POLLIN, 0}; ::poll(&gone, 1, 0) > 0) {  // (-1: could not tell)
    LogWarning("direct session for adapter pid ", hello.adapter_pid(),
               " abandoned: the adapter left while its worker started");
    pool_.Return(std::move(worker), /*reusable=*/true);
    co_return;
  }
  const std::string id = absl::StrCat(hello.adapter_pid(), "/", worker.id);
  // From here until the adapter is told the end, the shutdown waits for this session.
  Registration registration(sessions_, process.pid());
  if (registration.draining()) {
    pool_.Return(std::move(worker), /*reusable=*/true);
    answer.set_outcome(Answer::UNAVAILABLE);
    answer.set_reason("the server is stopping");
    LogInfo("direct session for adapter pid ", hello.adapter_pid(),
            " not started: the server is stopping");
    co_await Send(socket, answer);
    co_return;
  }

  worker::v1::Task task;
  task.mutable_direct_session()->set_id(id);
  task.mutable_direct_session()->set_peer(
      absl::StrCat("unix uid=", peer.uid, " pid=", peer.pid));
  // So that the shutdown asks it to end only once SIGTERM does that (and no longer kills it).
  task.mutable_direct_session()->set_announce_start(true);
  task.mutable_direct_session()->set_default_timeout_ms(
      absl::ToInt64Milliseconds(options_.default_couchdb_timeout));
  if (options_.max_answer_bytes > 0) {
    task.mutable_direct_session()->set_max_answer_bytes(options_.max_answer_bytes);
  }
  // The adapter's --max-line-bytes (0: the 64 MiB default), but never past what this server
  // lets a line be on the stream path, one gRPC message (--max-call-bytes): a line refused
  // there must not be indexed here, and any peer allowed on the socket sends the hello.
  constexpr int64_t kDefaultLineBytes = int64_t{64} << 20;
  const int64_t adapter_line_bytes =
      hello.max_line_bytes() > 0 ? hello.max_line_bytes() : kDefaultLineBytes;
  const int64_t server_line_bytes =
      options_.max_answer_bytes > 0 ? options_.max_answer_bytes : kDefaultLineBytes;
  task.mutable_direct_session()->set_max_line_bytes(
      std::min(adapter_line_bytes, server_line_bytes));
  task.mutable_direct_session()->set_line_limit_is_servers(server_line_bytes <
                                                           adapter_line_bytes);
  if (options_.call_timeout != absl::InfiniteDuration()) {
    task.mutable_direct_session()->set_max_call_timeout_ms(
        std::max<int64_t>(1, absl::ToInt64Milliseconds(options_.call_timeout)));
  }
  task.mutable_direct_session()->set_call_timeout_set_by_adapter(
      !options_.adapter_settings.empty());
  // Logged before the worker has the pipes, so the line is there by the time CouchDB sees a
  // reply (tests rely on it; so does an operator reading the log after a failure).
  LogInfo("direct session ", id, " started: adapter pid ", hello.adapter_pid(), ", worker pid ",
          process.pid());
  // Kept by the worker at where the session stands with CouchDB (worker::v1::CouchDbTurn):
  // read after its death, it says whether CouchDB is owed an error line. Without it
  // (memfd_create failed), CouchDB gets one whenever the worker dies.
  std::optional<SharedFlag> couchdb_turn;
  std::vector<int> handed_fds = pipes.get();
  if (absl::StatusOr<SharedFlag> made = SharedFlag::Create(); made.ok()) {
    couchdb_turn = std::move(*made);
    handed_fds.push_back(couchdb_turn->fd());
  } else {
    LogWarning("direct session ", id, ": no word for where it stands with CouchDB (",
               made.status().message(), "): an error line follows any end of its worker");
  }
  absl::Status handed = co_await process.SendWithDescriptors(task, handed_fds);
  if (couchdb_turn.has_value()) couchdb_turn->CloseDescriptor();  // the mapping stays
  if (!handed.ok()) {
    std::string how = co_await pool::HowItEnded(process, kWorkerEndGrace);
    LogError("session worker ", worker.id, " (pid ", process.pid(), ") ", how,
             " before it took a direct session (", handed.message(), ")");
    metrics::WorkerExited("crash", "session");
    pool_.Return(std::move(worker), /*reusable=*/false);
    answer.set_outcome(Answer::UNAVAILABLE);
    answer.set_reason(absl::StrCat("the session worker ", how));
    co_await Send(socket, answer);
    co_return;
  }
  answer.set_outcome(Answer::ACCEPTED);
  co_await Send(socket, answer);
  metrics::ActiveSession active("direct");

  // Now wait for whichever ends first: the worker's session (its last reply, or its socket
  // closing) or the adapter. The worker's session_progress frames on the way are counted and
  // are not the end: the wait goes on. When the adapter goes first, the worker is given
  // kAdapterGoneGrace to end too (unless it owes CouchDB an answer: then CouchDB killed the
  // adapter mid-command): CouchDB ends a query server by closing its input and killing
  // it at once, so the adapter usually goes first even at a normal end, and the worker, which
  // read the end of its input, says so a moment later; such a session ends as any other, its
  // worker kept. Readiness is raced, never a read: a read that loses a race is cancelled, and a
  // frame it had read would be lost with it.
  using Readiness = std::tuple<asio::error_code>;
  int progress_frames = 0;
  bool adapter_gone = false;
  bool mid_command = false;  // it went while CouchDB was owed an answer
  asio::steady_timer grace(co_await asio::this_coro::executor);
  // The worker's last frame (or why there is none); empty when the adapter went away and the
  // worker said nothing within the grace.
  std::optional<absl::StatusOr<worker::v1::Reply>> last;
  for (;;) {
    std::variant<Readiness, Readiness> first;
    if (adapter_gone) {
      first = co_await (process.WaitReadable() ||
                        grace.async_wait(asio::experimental::as_tuple(asio::use_awaitable)));
    } else {
      first = co_await (process.WaitReadable() ||
                        socket.async_wait(stream_protocol::socket::wait_read,
                                          asio::experimental::as_tuple(asio::use_awaitable)));
    }
    if (first.index() == 1) {
      if (adapter_gone) break;  // the grace passed
      // Only when the socket says so now: an asio wait can complete without its event (see
      // SessionWorkerPool::WatchSpare), and a live session would lose its worker.
      pollfd readable{socket.native_handle(), POLLIN, 0};
      if (::poll(&readable, 1, 0) <= 0) continue;
      adapter_gone = true;
      // Gone in the middle of a command (CouchDB's os_process_timeout killed it): nobody will
      // read the answer, and the worker is not waited for. Given the grace, it went on
      // computing for 2 s, holding one of --max-sessions.
      if (couchdb_turn.has_value() &&
          couchdb_turn->Get() != static_cast<uint32_t>(worker::v1::COUCHDB_OWED_NOTHING)) {
        mid_command = true;
        break;
      }
      grace.expires_after(absl::ToChronoNanoseconds(kAdapterGoneGrace));
      continue;
    }
    absl::StatusOr<worker::v1::Reply> frame = co_await process.Receive();
    if (frame.ok() && frame->has_session_started()) {
      registration.Started();
      continue;
    }
    if (frame.ok() && frame->has_session_progress()) {
      ++progress_frames;
      CountProgress(frame->session_progress(), id);
      continue;
    }
    last = std::move(frame);
    break;
  }
  registration.Over();

  Ended end;
  bool reusable = false;
  if (!last.has_value()) {
    // The adapter went away and the worker is still serving: CouchDB killed the adapter in
    // the middle of a command (its timeout), which nobody will read now. The worker is killed.
    LogWarning("direct session ", id, ": the adapter (pid ", hello.adapter_pid(), ") went away",
               mid_command ? " in the middle of a command" : "", "; killing its worker (pid ",
               process.pid(), ")");
    process.Kill();
    const std::optional<std::string> how = co_await process.Ended();
    LogInfo("direct session ", id, ": its worker ", how.value_or("was left to end"));
    metrics::WorkerExited("cancel", "session");
    pool_.Return(std::move(worker), /*reusable=*/false);
    co_return;
  }
  const absl::StatusOr<worker::v1::Reply>& reply = *last;
  if (reply.ok() && reply->has_session_end()) {
    const worker::v1::SessionEnd& session_end = reply->session_end();
    const bool stopping = session_end.reason() == worker::v1::SessionEnd::SERVER_STOPPING;
    end.set_exit_code(
        session_end.reason() == worker::v1::SessionEnd::INPUT_CLOSED || stopping ? 0 : 1);
    end.set_server_stopping(stopping);
    end.set_message(session_end.message());
    reusable = !reply->recycle();
    worker.commands += session_end.commands();
    LogInfo("direct session ", id, " ended after ", session_end.commands(), " commands (",
            progress_frames, " progress frames): ",
            worker::v1::SessionEnd::Reason_Name(session_end.reason()),
            session_end.message().empty() ? "" : " (", session_end.message(),
            session_end.message().empty() ? "" : ")");
  } else if (reply.ok() && reply->has_failure() &&
             reply->failure().code() == worker::v1::Failure::BAD_INPUT) {
    // The worker refused the task before it touched CouchDB's pipes (a task it cannot read,
    // e.g. from a worker that does not serve direct sessions): the adapter may still serve
    // CouchDB over the stream.
    end.set_exit_code(1);
    end.set_pipes_untouched(true);
    end.set_message(
        absl::StrCat("the worker did not take the session: ", reply->failure().message()));
    reusable = !reply->recycle();
    LogWarning("direct session ", id, ": ", end.message());
  } else if (reply.ok()) {
    // Any other reply may come after the worker read from CouchDB's pipe: nobody knows where
    // in CouchDB's input the session stopped, so the query server ends, and CouchDB starts
    // another (a line written now could land after part of an answer).
    end.set_exit_code(1);
    end.set_message(absl::StrCat("the worker ended the session without its end: ",
                                 reply->has_failure() ? reply->failure().message()
                                                      : reply->ShortDebugString()));
    reusable = false;
    LogError("direct session ", id, ": ", end.message());
  } else {
    std::string how = co_await pool::HowItEnded(process, kWorkerEndGrace);
    std::optional<int> status = process.wait_status();
    // An error line only where CouchDB waits for an answer. Died part way through a line to
    // CouchDB: CouchDB reads the part without its end, then the query server's exit, and fails
    // the request as it does for a query server that died. Died between commands: a line
    // would answer nothing (CouchDB logs it as unknown), and the exit says it all.
    const uint32_t turn = couchdb_turn.has_value()
                              ? couchdb_turn->Get()
                              : static_cast<uint32_t>(worker::v1::COUCHDB_OWED_AN_ANSWER);
    const bool answer_owed = turn == worker::v1::COUCHDB_OWED_AN_ANSWER;
    if (turn == worker::v1::COUCHDB_HOLDS_PART_OF_A_LINE) {
      absl::StrAppend(&how, " in the middle of a line to CouchDB (CouchDB has its start; no "
                            "error line follows)");
    } else if (turn == worker::v1::COUCHDB_OWED_NOTHING) {
      absl::StrAppend(&how, " between commands (CouchDB was owed no answer; no error line)");
    }
    const int signal = status.has_value() && WIFSIGNALED(*status) ? WTERMSIG(*status) : 0;
    end.set_exit_code(1);
    const int exited = status.has_value() && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
    // The watchdog writes CouchDB's timeout line (the turn word then no longer owes an answer)
    // before it exits so: a function's os._exit(124) in the middle of a command wrote none,
    // and CouchDB was left without an answer (a review). Without the word, the status is all
    // there is to go by.
    const bool watchdog_answered = !couchdb_turn.has_value() || !answer_owed;
    if ((exited == kSessionTimeoutExit || exited == kSessionCallTimeoutExit) &&
        watchdog_answered) {
      // The worker answered CouchDB's timeout error itself before it exited; the adapter says
      // which limit fired, as the setting to change differs.
      end.set_message(
          exited == kSessionTimeoutExit
              ? "a command ran past CouchDB's timeout (its reset's, less 0.5 s); its worker was "
                "ended"
              : absl::StrCat("a command ran past ",
                             std::string(couchdb::CallTimeoutSetting(
                                 !options_.adapter_settings.empty())),
                             " (", absl::FormatDuration(options_.call_timeout),
                             "), which caps every command; its worker was ended"));
      metrics::WorkerExited("deadline", "session");
      LogError("direct session ", id, ": worker (pid ", process.pid(), ") ", how);
    } else if (signal == SIGKILL && registration.cut()) {
      // The shutdown's grace ended with a command of this session still running.
      end.set_message("cnp-server stopped, and its --shutdown-grace ended before the command "
                      "in flight did; this query server ends");
      if (answer_owed) {
        end.set_error_line(couchdb::ErrorLine(
            "unavailable", "cnp-server stopped, and its --shutdown-grace ended before this "
                           "command did; this query server ends and CouchDB starts a new one"));
      }
      LogWarning("direct session ", id, ": its command was cut off by the end of the shutdown "
                 "grace (worker pid ", process.pid(), " ", how, ")");
    } else if (signal == SIGTERM && registration.draining()) {
      // The shutdown's SIGTERM, to a worker that could not act on it (session_stop.h: it had
      // no descriptor left for it): between commands or not, the server is stopping.
      end.set_exit_code(0);
      end.set_server_stopping(true);
      end.set_message("cnp-server is stopping; this query server ends");
      LogInfo("direct session ", id, " ended: the server is stopping (its worker ", how, ")");
    } else {
      metrics::WorkerExited("crash", "session");
      end.set_message(absl::StrCat("cnp-worker ", how, " while serving this query server"));
      if (answer_owed) {
        end.set_error_line(couchdb::ErrorLine(
            "worker_crashed", absl::StrCat("cnp-worker ", how,
                                           "; this query server ends and CouchDB starts a new "
                                           "one")));
      }
      LogError("direct session ", id, ": worker (pid ", process.pid(), ") ", how);
    }
  }
  // A worker that asked to be recycled (its reply said so); the others not reusable were counted
  // above, by how they ended.
  if (!reusable && reply.ok()) metrics::WorkerExited("recycle", "session");
  pool_.Return(std::move(worker), reusable);
  co_await Send(socket, end);
}

}  // namespace cnp::session
