#include "adapter/service_connection.h"

#include <sys/stat.h>

#include <algorithm>
#include <random>
#include <thread>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "client/lib/channel_target.h"
#include "client/lib/service_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "common/call_limit.h"
#include "common/socket_directory.h"
#include "common/session_heartbeat.h"
#include "common/socket_trust.h"
#include "common/unix_target.h"
#include "grpcpp/grpcpp.h"

namespace cnp::adapter {
namespace {

// The mark of a line the service refused as too large: the server's own (its "cnp-call-limit"
// trailer), or gRPC's refusal of a message over its limit ("Received message larger than max
// (150123 vs. 100000)", or "Sent ..." on this side). Other RESOURCE_EXHAUSTED statuses (the
// server overloaded, --max-grpc-memory cancelling streams) pass, and carry no mark.
std::optional<CallLimit> TooLargeMark(const grpc::Status& status,
                                      const grpc::ClientContext& context) {
  if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) return std::nullopt;
  const std::multimap<grpc::string_ref, grpc::string_ref>& trailers =
      context.GetServerTrailingMetadata();
  if (auto it = trailers.find(kCallLimitTrailer); it != trailers.end()) {
    if (std::optional<CallLimit> limit =
            ParseCallLimit(absl::string_view(it->second.data(), it->second.size()))) {
      return limit;
    }
  }
  // error_message() returns a copy: kept for as long as it is read.
  const std::string copy = status.error_message();
  const absl::string_view message = copy;
  if (!absl::StartsWith(message, "Received message larger than max") &&
      !absl::StartsWith(message, "Sent message larger than max")) {
    return std::nullopt;
  }
  int64_t limit = 0;
  constexpr absl::string_view kBefore = " vs. ";
  if (const size_t at = message.rfind(kBefore); at != absl::string_view::npos) {
    absl::string_view rest = message.substr(at + kBefore.size());
    rest = rest.substr(0, rest.find(')'));
    if (!absl::SimpleAtoi(rest, &limit) || limit < 0) limit = 0;
  }
  return CallLimit{.kind = CallLimit::Kind::kRequest, .limit = limit};
}

// Answer CouchDB with our own error this long before its timeout would fire.
constexpr double kShareOfCouchDBTimeout = 0.8;
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(10);
constexpr absl::Duration kMaxBackoff = absl::Milliseconds(250);
// However long CouchDB's timeout (a `reset` may give hours), a service that cannot be reached
// is not a slow command: connecting is given up after this, and CouchDB told at once.
constexpr absl::Duration kMaxReconnectWindow = absl::Seconds(30);
// A frozen replica is found within interval + timeout (2.5 s), so that at CouchDB's default
// timeout (5 s, of which the adapter takes 80% for retries) the command still has 1.5 s to be
// replayed on another. The interval stays clear of cnp-server's minimum (1 s, rpc_server.cc)
// whatever the timers' jitter; the timeout, of the backup poller's 500 ms (main.cc), which reads
// the answer while the adapter waits for CouchDB.
constexpr absl::Duration kPingInterval = absl::Milliseconds(1250);
constexpr absl::Duration kPingTimeout = absl::Milliseconds(1250);
// Heartbeats asked of the service while a command runs (common/session_heartbeat.h), and how
// many intervals of silence mean it has stopped: behind a proxy, which answers the pings above
// itself, a frozen replica is found as soon as through pings on a direct connection (2.5 s).
constexpr absl::Duration kAskedHeartbeat = absl::Seconds(1);
constexpr double kSilenceLimit = 2.5;
// An answer the service announced (SessionOutput.answer_bytes) may take this long per MiB to
// come, on top: the least rate cnp-server allows a reader of its answers, too.
constexpr absl::Duration kTransferPerMiB = absl::Seconds(1);
// The one operation on the stream at a time (the exchange is lockstep), so one tag.
void* const kTag = reinterpret_cast<void*>(1);

std::shared_ptr<grpc::Channel> NewChannel(
    const std::string& target, const std::string& uri,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  grpc::ChannelArguments args;
  // Several replicas (a list or a dns:/// name): each new stream goes to one that is up and
  // serving (not draining), round robin, so a session whose replica died or stopped is
  // replayed on another.
  args.SetServiceConfigJSON(
      client::ClientServiceConfig(client::RetryPolicy::kNone, client::NamesReplicas(target)));
  client::KeepLocalTargetOffProxies(target, args);
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // The adapter keeps its own backoff within CouchDB's timeout; gRPC's default (starting at
  // 1 s) would eat most of it. A private subchannel pool makes a new channel really reconnect.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 10);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // gRPC also gives up one connection attempt after the larger of this and the backoff (its
  // MIN_CONNECT_TIMEOUT): at 10 ms, a connection slower than 250 ms to set up (a far proxy, a
  // TLS handshake over a long path) never came up. The caller's deadline bounds the wait.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 20000);
  // A replica that stops answering (frozen, its host gone) is found by HTTP/2 pings, in the
  // middle of a long command too, not by CouchDB killing the adapter at its timeout. A command
  // sends no data while it runs, so pings must not wait for data. cnp-server accepts a ping a
  // second on a connection with a call open (service/rpc/rpc_server.cc).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, absl::ToInt64Milliseconds(kPingInterval));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, absl::ToInt64Milliseconds(kPingTimeout));
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Per-message costs the lockstep exchange does not need: the retry filter buffers every
  // message of the stream (the adapter retries itself, with replay), and BDP probing pings on
  // every data frame to size windows for bulk transfers that never happen here.
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  // No per-call deadline or census filters: the stream has no deadline and no tracing.
  args.SetInt(GRPC_ARG_MINIMAL_STACK, 1);
  return grpc::CreateCustomChannel(uri, credentials, args);
}

}  // namespace

bool ReplyTaughtSession(couchdb::CommandKind kind, const v1::SessionOutput& reply) {
  if (reply.accepted()) return true;
  const bool teaches = kind == couchdb::CommandKind::kAddLib ||
                       kind == couchdb::CommandKind::kAddFun ||
                       kind == couchdb::CommandKind::kDesignDocNew;
  if (!teaches || reply.exit() || reply.lines_size() == 0) return false;
  // The function's module may log as it is imported: its log lines come before the `true`.
  const int last = reply.lines_size() - 1;
  for (int i = 0; i < last; ++i) {
    if (!absl::StartsWith(reply.lines(i), R"(["log",)")) return false;
  }
  return reply.lines(last) == "true";
}

absl::Status CheckTargetSocket(const ServiceConnection::Options& options) {
  if (!IsUnixTarget(options.target)) return absl::OkStatus();
  absl::StatusOr<std::string> path = UnixSocketPath(options.target);
  if (!path.ok()) return path.status();
  const SocketTrust trust = SocketTrust::WithServerUid(options.server_uid);
  if (options.may_launch) {
    const std::string dir = SocketDirectory(*path);
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) return absl::OkStatus();  // the launcher makes it, ours
    if (absl::Status s = CheckSocketDirectory(dir, DirectoryOwner::kMe); !s.ok()) return s;
  }
  return trust.CheckSocket(*path);
}

ServiceConnection::ServiceConnection(Options options, const SessionState& state)
    : options_(std::move(options)), state_(state), heartbeat_(kAskedHeartbeat) {}

ServiceConnection::~ServiceConnection() {
  if (stream_ != nullptr) Drop().IgnoreError();
}

absl::Duration ServiceConnection::AnswerWithin() const {
  // The service answers every command within CouchDB's timeout less its margin (min(500 ms,
  // half): QueryProtocol::CallBudget, with its own timeout error if need be), and CouchDB kills
  // the adapter at its timeout. Halfway between the two, a command the service would still
  // answer is never cut, and CouchDB still reads our error.
  const absl::Duration timeout = state_.couchdb_timeout();
  return timeout - std::min(absl::Milliseconds(500), timeout / 2) / 2;
}

void ServiceConnection::Send(std::string_view line) {
  if (stream_ == nullptr) return;
  input_.set_line(line.data(), line.size());
  heard_in_exchange_ = false;
  stream_->Write(input_, kTag);
  if (Await(absl::Now() + AnswerWithin()) != Op::kDone) Drop().IgnoreError();
}

absl::StatusOr<const v1::SessionOutput*> ServiceConnection::Call(std::string_view line,
                                                                 bool retry) {
  // CouchDB's timeout runs from the command's start, or from the last log line it read: lines
  // forwarded by a stream that then broke keep a retry's time as they kept the first try's.
  const absl::Time start = absl::Now();
  last_line_forwarded_ = start;
  absl::Time deadline, answer_by, retry_until;
  auto window_from = [&](absl::Time since) {
    deadline = since + state_.couchdb_timeout() * kShareOfCouchDBTimeout;
    // No exchange of this call waits past this, the first one's answer or a retry's: a service
    // that stops answering (frozen, its host gone quietly) is given up for another, or
    // answered for, while CouchDB still reads our error.
    answer_by = since + AnswerWithin();
    // From the command's start, whatever lines came: each replay runs the function again and
    // forwards new lines, so a window counted from the last line would let a link that keeps
    // breaking replay the command for ever (a review: 19 runs in 60 s, never answered).
    retry_until = std::min(deadline, start + kMaxReconnectWindow);
  };
  window_from(start);
  absl::Duration backoff = kFirstBackoff;
  absl::Status last;
  // What went wrong once a stream was open (a proxy's 502, a refused replay): a later "cannot
  // connect" must not hide it from the operator.
  absl::Status cause;
  bool retried_at_once = false;
  while (true) {
    bool reached = false;
    if (stream_ == nullptr) last = Connect(deadline, answer_by, &reached);
    if (stream_ != nullptr) {
      absl::Status taught = TeachDesignDocFor(line, deadline, answer_by);
      if (taught.ok() && Exchange(line, answer_by, /*forward_early=*/true)) {
        NoteDesignDocTaught(line);
        return &output_;
      }
      last = taught.ok() ? Drop() : taught;
      window_from(last_line_forwarded_);
      if (cause.ok()) cause = last;
      // The service refused the message as too large, or the token: sending it again cannot
      // help. (An overloaded service, RESOURCE_EXHAUSTED without that mark, may take it.)
      if (!retry || CallLimitOf(last).has_value() || absl::IsFailedPrecondition(last)) break;
      // Once at once: a restarted service may be back already. Not again: a proxy whose
      // upstream is down accepts every stream and fails it, and would be sent hundreds a second.
      if (!retried_at_once) {
        retried_at_once = true;
        continue;
      }
    } else if (reached && cause.ok()) {
      cause = last;
    }
    // A replay the service refused, or a service that cannot start, fails the same way again.
    if (!retry || absl::IsFailedPrecondition(last) || absl::Now() + backoff > retry_until) break;
    std::this_thread::sleep_for(absl::ToChronoNanoseconds(backoff));
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
  if (std::optional<CallLimit> limit = CallLimitOf(last)) {
    return WithCallLimit(absl::ResourceExhaustedError(absl::StrCat(
                             "cnp-server at ", options_.target, " refused the line as too large (",
                             line.size(), " bytes): ", last.message())),
                         *limit);
  }
  // A precondition (a refused replay, a token, the socket's owner) says what to mend; it
  // outranks what broke the stream before.
  const absl::Status& reported = cause.ok() || absl::IsFailedPrecondition(last) ? last : cause;
  // Its code is kept where it says something CouchDB's reader can act on (an overloaded
  // service, its deadline); anything else is a service that could not be reached.
  const absl::StatusCode code = absl::IsResourceExhausted(reported) ||
                                        absl::IsDeadlineExceeded(reported)
                                    ? reported.code()
                                    : absl::StatusCode::kUnavailable;
  return absl::Status(code, absl::StrCat("cnp-server at ", options_.target, ": ",
                                         reported.ok() ? "the session stream broke"
                                                       : reported.message()));
}

absl::Status ServiceConnection::Connect(absl::Time deadline, absl::Time answer_by,
                                        bool* reached) {
  // Checked on every attempt, as the socket may have been replaced since.
  if (absl::Status status = CheckTargetSocket(options_); !status.ok()) {
    return status;  // FAILED_PRECONDITION is not retried; a missing directory (UNAVAILABLE) is
  }
  // Read on every connection, so a rotated token is picked up by the next reconnect.
  absl::StatusOr<client::LoadedChannelSecurity> security =
      client::LoadChannelSecurity(options_.security, options_.target);
  if (!security.ok()) return absl::FailedPreconditionError(security.status().message());
  if (options_.may_launch) {
    if (absl::StatusOr<std::string> path = UnixSocketPath(options_.target);
        path.ok() && !UnixSocketAccepts(*path)) {
      if (absl::Status status = EnsureServiceRunning(*path, options_.launch, deadline);
          !status.ok()) {
        return status;
      }
    }
  }
  // Each adapter starts a list of replicas at a random one: its session's stream goes to the
  // first that connects, and CouchDB starts many adapters at once.
  absl::StatusOr<std::string> uri =
      client::ChannelTargetUri(options_.target, std::random_device{}());
  if (!uri.ok()) return absl::FailedPreconditionError(uri.status().message());
  // Kept across attempts until a stream breaks: a connection slower than one attempt to set
  // up goes on setting up, where a new channel each time started over and never came up.
  if (channel_ == nullptr) {
    channel_ = NewChannel(options_.target, *uri, security->credentials);
  }
  // Do not wait long for one attempt: the checks above are made again before the next.
  const absl::Time attempt = std::min(deadline, absl::Now() + absl::Milliseconds(500));
  if (!channel_->WaitForConnected(absl::ToChronoTime(attempt))) {
    return absl::UnavailableError("cannot connect");
  }
  stub_ = v1::Functions::NewStub(channel_);
  context_ = std::make_unique<grpc::ClientContext>();
  if (!security->authorization.empty()) {
    context_->AddMetadata("authorization", security->authorization);
  }
  context_->AddMetadata(kHeartbeatHeader,
                        absl::StrCat(absl::ToInt64Milliseconds(kAskedHeartbeat)));
  queue_ = std::make_unique<grpc::CompletionQueue>();
  stream_ = stub_->PrepareAsyncSession(context_.get(), queue_.get());
  stream_->StartCall(kTag);
  *reached = true;
  if (Await(answer_by) != Op::kDone) return Drop();
  return Replay(deadline, answer_by);
}

absl::Status ServiceConnection::Replay(absl::Time deadline, absl::Time answer_by) {
  for (const std::string& line : state_.ReplayLines()) {
    // A replica that answers each replayed line slowly must not use up CouchDB's timeout: the
    // command itself is still to be sent.
    if (absl::Now() > deadline) {
      Drop().IgnoreError();
      return absl::UnavailableError("the session could not be replayed in time");
    }
    const couchdb::CommandKind kind = couchdb::PeekCommand(line);
    if (kind == couchdb::CommandKind::kReset) {
      input_.set_line(line);
      heard_in_exchange_ = false;
      stream_->Write(input_, kTag);
      if (Await(answer_by) != Op::kDone) return Drop();
      continue;
    }
    if (!Exchange(line, answer_by)) return ReplayRefused(Drop(), line);
    // The new stream must know exactly what the old one did: a map_doc answered with fewer
    // functions would index documents wrongly.
    if (!ReplyTaughtSession(kind, output_)) {
      Drop().IgnoreError();
      return absl::FailedPreconditionError(absl::StrCat(
          "the service refused the replayed session state (",
          output_.lines_size() > 0 ? output_.lines(output_.lines_size() - 1) : "no reply", ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ServiceConnection::ReplayRefused(absl::Status dropped, std::string_view line) {
  // A line this session's earlier replica took, refused by this one as too large (a smaller
  // --max-call-bytes): sending it again cannot help, and the command in flight is not the one
  // that was too large.
  if (!CallLimitOf(dropped).has_value()) return dropped;
  return absl::FailedPreconditionError(absl::StrCat(
      "the service refused the replayed session state: a line of ", line.size(),
      " bytes it was taught before is too large for this replica (", dropped.message(),
      "); give every replica the same --max-call-bytes"));
}

absl::Status ServiceConnection::TeachDesignDocFor(std::string_view line, absl::Time deadline,
                                                  absl::Time answer_by) {
  // Most lines: nothing CouchDB taught is missing here, so the line is not even parsed.
  if (taught_design_docs_.size() >= state_.design_doc_count()) return absl::OkStatus();
  if (couchdb::PeekCommand(line) != couchdb::CommandKind::kDesignDocCall) return absl::OkStatus();
  const couchdb::Command command = couchdb::ParseCommand(line);
  const auto* call = std::get_if<couchdb::command::DesignDocCall>(&command);
  if (call == nullptr || taught_design_docs_.contains(call->id)) return absl::OkStatus();
  // One CouchDB never taught: the service answers it as couchjs does (uncached design doc).
  const std::string* teach = state_.DesignDocLine(call->id);
  if (teach == nullptr) return absl::OkStatus();
  if (absl::Now() > deadline) {
    Drop().IgnoreError();
    return absl::UnavailableError("the session could not be replayed in time");
  }
  if (!Exchange(*teach, answer_by)) return ReplayRefused(Drop(), *teach);
  if (!ReplyTaughtSession(couchdb::CommandKind::kDesignDocNew, output_)) {
    Drop().IgnoreError();
    return absl::FailedPreconditionError(absl::StrCat(
        "the service refused the replayed design document ", call->id, " (",
        output_.lines_size() > 0 ? output_.lines(output_.lines_size() - 1) : "no reply", ")"));
  }
  taught_design_docs_.insert(call->id);
  return absl::OkStatus();
}

void ServiceConnection::NoteDesignDocTaught(std::string_view line) {
  if (couchdb::PeekCommand(line) != couchdb::CommandKind::kDesignDocNew ||
      !ReplyTaughtSession(couchdb::CommandKind::kDesignDocNew, output_)) {
    return;
  }
  const couchdb::Command command = couchdb::ParseCommand(line);
  if (const auto* ddoc = std::get_if<couchdb::command::DesignDocNew>(&command)) {
    taught_design_docs_.insert(ddoc->id);
  }
}

bool ServiceConnection::Exchange(std::string_view line, absl::Time answer_by,
                                 bool forward_early) {
  input_.set_line(line.data(), line.size());
  heard_in_exchange_ = false;
  stream_->Write(input_, kTag);
  if (Await(answer_by) != Op::kDone) return false;
  absl::Duration transfer = absl::ZeroDuration();  // of an answer announced as large
  for (;;) {
    stream_->Read(&output_, kTag);
    const absl::Time silent_by = heartbeat_ > absl::ZeroDuration()
                                     ? absl::Now() + heartbeat_ * kSilenceLimit + transfer
                                     : absl::InfiniteFuture();
    if (Await(std::min(answer_by, silent_by)) != Op::kDone) {
      silent_ = expired_ && silent_by < answer_by;
      return false;
    }
    heard_in_exchange_ = true;
    if (!std::exchange(heard_on_stream_, true)) {
      heartbeat_ = absl::Milliseconds(output_.heartbeat_ms());
    }
    if (!output_.partial()) return true;
    transfer = kTransferPerMiB * (static_cast<double>(std::max<int64_t>(output_.answer_bytes(), 0)) / (1 << 20));
    if (forward_early && output_.lines_size() > 0 && options_.write_early) {
      options_.write_early(output_);
      // CouchDB restarts its timeout on each line it reads, and so does the service's deadline
      // for the command: the answer may come that much later.
      last_line_forwarded_ = absl::Now();
      answer_by = std::max(answer_by, last_line_forwarded_ + AnswerWithin());
    }
  }
}

ServiceConnection::Op ServiceConnection::Await(absl::Time deadline) {
  pending_ = true;
  void* tag = nullptr;
  bool ok = false;
  switch (queue_->AsyncNext(&tag, &ok, absl::ToChronoTime(deadline))) {
    case grpc::CompletionQueue::GOT_EVENT:
      pending_ = false;
      return ok ? Op::kDone : Op::kFailed;
    case grpc::CompletionQueue::TIMEOUT:
      expired_ = true;
      return Op::kExpired;
    case grpc::CompletionQueue::SHUTDOWN:
      break;
  }
  pending_ = false;
  return Op::kFailed;
}

absl::Status ServiceConnection::Drop() {
  if (stream_ == nullptr) return absl::UnavailableError("not connected");
  context_->TryCancel();
  void* tag = nullptr;
  bool ok = false;
  // The operation that expired completes once the call is cancelled; only then may the call
  // finish and the queue go.
  if (pending_) queue_->Next(&tag, &ok);
  grpc::Status status;
  stream_->Finish(&status, kTag);
  queue_->Next(&tag, &ok);
  const std::optional<CallLimit> too_large = TooLargeMark(status, *context_);
  queue_->Shutdown();
  while (queue_->Next(&tag, &ok)) {
  }
  pending_ = false;
  taught_design_docs_.clear();
  const bool expired = std::exchange(expired_, false);
  const bool silent = std::exchange(silent_, false);
  const bool was_working = std::exchange(heard_in_exchange_, false);
  const bool had_answered = std::exchange(heard_on_stream_, false);
  stream_.reset();
  queue_.reset();
  context_.reset();
  stub_.reset();
  channel_.reset();
  if (silent) {
    return absl::UnavailableError(
        "the service went silent while the command ran (no heartbeat): it stopped answering "
        "(frozen, or its host gone)");
  }
  if (expired && was_working) {
    // Alive but not done: the service's own budget should have answered first, so it was too
    // busy to, or its answer was still crossing. Another replica would start the command over.
    return absl::DeadlineExceededError(
        "no answer before CouchDB's timeout was near, though the service was still working on "
        "the command (its heartbeats came): it is overloaded, its answer too large to cross in "
        "time, or it stopped only just now");
  }
  if (expired) {
    return absl::UnavailableError(
        "no answer before CouchDB's timeout was near: the service stopped answering (frozen, "
        "or its host gone)");
  }
  if (too_large.has_value()) {
    return WithCallLimit(absl::ResourceExhaustedError(status.error_message()), *too_large);
  }
  // A passing overload, or the server's own deadline: the code says which error CouchDB gets
  // (couchdb::InfrastructureErrorId), and the line may be sent again.
  if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("the session stream broke: ", status.error_message()));
  }
  if (status.ok() || status.error_code() == grpc::StatusCode::CANCELLED) {
    return absl::UnavailableError("the session stream broke");
  }
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    // A stream the service had answered ends so when the operator removed its token (a
    // rotation, or a token revoked): the next connection reads the token file again, and its
    // session is replayed there. Refused from the first, a token stays wrong: retrying until
    // CouchDB's timeout helps no one.
    if (had_answered) {
      return absl::UnavailableError(absl::StrCat(
          "the service no longer accepts the token this session's stream was opened with (",
          status.error_message(), "); reconnecting with the token file as it is now"));
    }
    return absl::FailedPreconditionError(status.error_message());
  }
  return absl::UnavailableError(absl::StrCat("the session stream broke: ", status.error_message()));
}

}  // namespace cnp::adapter
