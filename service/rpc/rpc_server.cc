#include "service/rpc/rpc_server.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <chrono>
#include <limits>
#include <memory>
#include <cstdio>
#include <stop_token>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/couchdb/couch_url.h"
#include "common/printable_text.h"
#include "common/secret_file.h"
#include "common/session_heartbeat.h"
#include "grpc/grpc.h"
#include "grpc/support/time.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/support/server_interceptor.h"
#include "common/unix_target.h"
#include "service/common/log.h"
#include "service/common/socket_users.h"
#include "service/http2_guard/guarded_connections.h"
#include "service/metrics/service_metrics.h"
#include "service/pool/async_task_runner.h"
#include "service/rpc/call_memory.h"
#include "service/rpc/encoded_map_call.h"
#include "service/rpc/heartbeating_session.h"
#include "service/rpc/request_parsing.h"
#include "service/rpc/server_stream_call.h"
#include "service/rpc/token_bound_stream.h"
#include "service/rpc/unary_call.h"

namespace cnp::rpc {
namespace {

using Service = FunctionsService;

// How long before the server's copy of a client's deadline a cancel of the call still counts
// as the deadline passing: the pool's rule, so that the call's count, its log line and its
// worker's exit cause agree.
using ::cnp::pool::kDeadlineCancelSlack;

// A client's deadline this far away or more is no deadline (ClientDeadline).
constexpr absl::Duration kNoDeadlineBeyond = absl::Hours(24 * 365 * 100);

// The client's deadline; none when it sent none, or one so far away that it is none in effect.
// Read from gRPC's own timespec: its std::chrono form counts nanoseconds in an int64, and a
// deadline past 2262 (grpc-timeout 2562047H, what Go sends for its largest time.Duration)
// overflowed into the past, failing the call at once with DEADLINE_EXCEEDED.
absl::Time ClientDeadline(const grpc::ServerContext& context) {
  const gpr_timespec raw = gpr_convert_clock_type(context.raw_deadline(), GPR_CLOCK_REALTIME);
  if (gpr_time_cmp(raw, gpr_inf_future(GPR_CLOCK_REALTIME)) >= 0) return absl::InfiniteFuture();
  const absl::Time deadline =
      absl::FromUnixSeconds(raw.tv_sec) + absl::Nanoseconds(raw.tv_nsec);
  if (deadline >= absl::Now() + kNoDeadlineBeyond) return absl::InfiniteFuture();
  return deadline;
}

// For the log lines of a call (CallLogScope).
std::string PeerOf(const void* context) {
  return CallGate::PeerIdentity(*static_cast<const grpc::ServerContext*>(context));
}

// The token check for reflection, whose streams run on gRPC's synchronous threads where
// CallGate never looks: over TLS gRPC's AuthMetadataProcessor has refused a stream without the
// token already, on a plaintext loopback listener this is the check. A stream refused here is
// ended UNAUTHENTICATED before its handler reads anything, so it gives its thread back at once.
class ReflectionGate final : public grpc::experimental::Interceptor {
 public:
  ReflectionGate(grpc::experimental::ServerRpcInfo* info, const CallGate& gate)
      : info_(info), gate_(gate) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using Hook = grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(Hook::POST_RECV_INITIAL_METADATA)) {
      grpc::ServerContextBase* base = info_->server_context();
      const auto* context = dynamic_cast<const grpc::ServerContext*>(base);
      const absl::Status admitted =
          context == nullptr ? absl::UnauthenticatedError("not a call the server can check")
                             : gate_.Admit(*context, "ServerReflectionInfo");
      if (!admitted.ok()) {
        const std::string message(admitted.message());
        grpc_call_cancel_with_status(base->c_call(), GRPC_STATUS_UNAUTHENTICATED,
                                     message.c_str(), nullptr);
      }
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* const info_;
  const CallGate& gate_;
};

// Linking gRPC's reflection library registers its plugin with every ServerBuilder (a static
// initializer): without --reflection this takes it out again.
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    std::erase_if(*plugins, [](const std::unique_ptr<grpc::ServerBuilderPlugin>& plugin) {
      return absl::StrContains(plugin->name(), "reflection");
    });
  }
};

class ReflectionGateFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit ReflectionGateFactory(const CallGate& gate) : gate_(gate) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    // Every other call is ours, checked by CallGate (or the health service, which needs no token).
    if (!absl::StartsWith(info->method(), "/grpc.reflection.")) return nullptr;
    return new ReflectionGate(info, gate_);
  }

 private:
  const CallGate& gate_;
};

// MapStream: each message is one Map call, awaited, served on its bytes as a unary Map is
// (encoded_map_call.h), its answer counted as it grows.
class MapStreamHandler final : public StreamHandler<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit MapStreamHandler(calls::FunctionCalls& calls) : calls_(calls) {}
  asio::awaitable<absl::StatusOr<std::optional<grpc::ByteBuffer>>> Handle(
      grpc::ByteBuffer& request) override {
    const calls::AnswerGrowth uncounted;
    co_return co_await HandleGrowing(request, uncounted);
  }
  asio::awaitable<absl::StatusOr<std::optional<grpc::ByteBuffer>>> HandleGrowing(
      grpc::ByteBuffer& request, const calls::AnswerGrowth& grown) override {
    grpc::ByteBuffer response;
    // No deadline of the stream's own: FunctionCalls applies --call-timeout to each message.
    const absl::Time deadline = absl::InfiniteFuture();
    absl::Status status =
        co_await ServeEncodedMap(calls_, deadline, request, response, grown, "MapStream");
    if (!status.ok()) co_return status;
    co_return response;
  }

 private:
  calls::FunctionCalls& calls_;
};

// What an Upload does, for the access log: never the CouchDB URL's user:password part nor
// the credentials.
void LogUpload(const AccessLog& access_log, const grpc::ServerContext& context,
               const v1::UploadRequest& request) {
  // The user info runs to the URL's last '@': a password may hold '/' or '@'.
  const std::string couchdb = couchdb::RedactUrl(request.couchdb_url());
  const bool registering = !request.register_database().empty();
  const char* mode = request.check_only() ? "check" : request.dry_run() ? "dry-run"
                     : registering ? "register" : request.staged() ? "staged" : "write";
  // A registration writes to its registry database, not `database` (a probe read "write
  // database=-" for one).
  const std::string& database = registering ? request.register_database() : request.database();
  const std::string files = absl::StrCat(request.files_size());
  access_log.Write("upload", context.peer(),
                   {{"cert", CallGate::PeerCertificate(context)},
                    {"call", "Upload"},
                    {"couchdb", couchdb.empty() ? "-" : couchdb},
                    {"database", database.empty() ? "-" : database},
                    {"files", files, true},
                    {"mode", mode}});
}

class UnavailableSession final : public SessionHandler {
 public:
  asio::awaitable<absl::StatusOr<std::optional<v1::SessionOutput>>> Handle(
      v1::SessionInput&) override {
    co_return absl::UnimplementedError("this server does not serve CouchDB sessions");
  }
};

// `handler`, ended at its next message once the token its stream was admitted with is removed
// (token_bound_stream.h); as it is when the server takes no tokens.
std::unique_ptr<StreamHandler<grpc::ByteBuffer, grpc::ByteBuffer>> BoundToItsToken(
    std::unique_ptr<StreamHandler<grpc::ByteBuffer, grpc::ByteBuffer>> handler,
    const CallGate& gate, const grpc::ServerContext& context, const char* method,
    uint64_t generation) {
  if (!gate.RequiresTokens()) return handler;
  return std::make_unique<TokenBoundStream<grpc::ByteBuffer, grpc::ByteBuffer>>(
      std::move(handler), gate, context, method, generation);
}

// How long cancelled calls get to end before the server's threads stop anyway: their handlers
// were cancelled and their uploads told to stop, so this is only reached by a call stuck in
// code that does not look (a handler's own blocking call).
constexpr absl::Duration kCancelledCallsEnd = absl::Seconds(10);
// How long a shutdown with no call left waits for the clients to close their connections.
constexpr absl::Duration kConnectionsClose = absl::Seconds(1);
// How many more calls each method asks gRPC for, on each context, as the server shuts down:
// enough for every call of hundreds of clients that waits to be taken (AskForWaitingCalls).
constexpr int kCallsAskedForAtShutdown = 64;
// gRPC's shutdown deadline is this much later than the grace's end (see Shutdown).
constexpr absl::Duration kGrpcDeadlineAfterOurs = absl::Seconds(5);
// How long calls whose work was stopped past the grace get to answer in the server's own
// words before gRPC cancels what is left.
constexpr absl::Duration kStoppedCallsAnswer = absl::Seconds(1);

// " (in DIR)" for a unix socket bound at a relative path, DIR the working directory it is in:
// where to point the clients. (A relative path, kept as given, is how a socket goes in a
// directory whose absolute path is too long for a socket address.)
std::string InWorkingDirectory(const std::string& address) {
  absl::StatusOr<std::string> path = UnixSocketPath(address);
  if (!path.ok() || absl::StartsWith(*path, "/")) return "";
  std::error_code error;
  const std::filesystem::path directory = std::filesystem::current_path(error);
  return error ? "" : absl::StrCat(" (in ", directory.string(), ")");
}

// A unix socket lets in only the users it is told to (SO_PEERCRED); a loopback TCP listener
// lets in every process of the host, whoever runs it. Without a token or client certificates
// any local user can then run the allowed functions and use Upload. That may be intended (a
// host with no other users, nginx in front on the same host), so it is a warning, not a
// refusal: loopback listeners without a token are how nginx and the tests reach the server.
void WarnIfOpenToLocalUsers(const listen::ListeningSocket& socket,
                            const TransportSecurity& security) {
  if (!security.auth_token_file.empty() || !security.tls_client_ca_file.empty()) return;
  LogWarning("listening on ", socket.address,
             " without --auth-token-file or --tls-client-ca: every local user of this host, "
             "not only the server's, can connect there and run the allowed functions (unix "
             "sockets check the user; loopback TCP cannot). Give --auth-token-file (and the "
             "clients the token), or listen on a unix socket, unless every local user is "
             "trusted (README \"Security\")");
}

// Settings that act on TCP connections only, given to a server with none: an operator who set
// a token believes callers must show it, and on a unix socket they are never asked.
void WarnOfTcpSettingsWithoutTcp(const std::vector<listen::ListeningSocket>& sockets,
                                 const TransportSecurity& security,
                                 absl::Duration first_call_timeout) {
  for (const listen::ListeningSocket& socket : sockets) {
    if (!socket.is_unix) return;
  }
  if (!security.auth_token_file.empty()) {
    LogWarning("--auth-token-file is set, but every listener is a unix socket, whose callers "
               "are never asked for a token: the socket's permissions (--socket-group) and "
               "--allow-uid say who may call. The token is for TCP listeners");
  }
  if (first_call_timeout > absl::ZeroDuration()) {
    LogWarning("--first-call-timeout is set, but every listener is a unix socket: it closes "
               "TCP connections only");
  }
  if (security.UsesTls() || !security.tls_client_ca_file.empty()) {
    LogWarning("--tls-cert, --tls-key and --tls-client-ca are set, but every listener is a unix "
               "socket, which never uses TLS: its callers are let in by the socket's "
               "permissions (--socket-group) and --allow-uid. TLS is for TCP listeners");
  }
}

// Runs an upload that stops when its call ends or when the server stops its work (past the
// shutdown grace, with the workers): then it is told why in the server's own words, UNAVAILABLE
// to be retried elsewhere as other calls cut by the shutdown are, rather than be cancelled a
// second later by gRPC with "Cancelling all calls".
absl::Status RunUpload(const UploadHandler& upload, const v1::UploadRequest& request,
                       const UploadEmit& emit, std::stop_token call_ended,
                       const std::stop_source& server_stopping) {
  std::stop_source stop;
  std::stop_callback on_call_end(call_ended, [&stop] { stop.request_stop(); });
  std::stop_callback on_server_stop(server_stopping.get_token(),
                                    [&stop] { stop.request_stop(); });
  absl::Status status = upload(request, emit, stop.get_token());
  if (absl::IsCancelled(status) && server_stopping.stop_requested() &&
      !call_ended.stop_requested()) {
    return absl::UnavailableError(
        "the server shut down before the upload finished, so some design documents may not "
        "be written: run the upload again (on another server, or here once it is back); those "
        "already in place are left unchanged");
  }
  return status;
}

}  // namespace

RpcServer::RpcServer(ServerOptions options, calls::FunctionCalls& calls, SessionFactory sessions,
                     UploadHandler upload)
    : options_(std::move(options)), calls_(calls),
      request_caps_(RequestFieldCaps(calls.options().max_docs_per_call)),
      call_memory_(options_.max_grpc_memory_bytes),
      sessions_(std::move(sessions)),
      upload_(std::move(upload)) {}

namespace {

// Clients refuse an expired certificate, and renewals are best made well before: said at start
// and whenever the certificate served changes.
constexpr absl::Duration kExpirySoon = absl::Hours(14 * 24);

void WarnOfExpiry(const TlsFiles& files) {
  const absl::Duration left = files.expires() - absl::Now();
  if (left <= absl::ZeroDuration()) {
    LogError("the TLS certificate served (", files.certificate(),
             ") has expired: clients refuse it; renew it (SIGHUP, or the check every minute, "
             "takes the new one)");
  } else if (left < kExpirySoon) {
    LogWarning("the TLS certificate served (", files.certificate(), ") expires in ",
               absl::FormatDuration(absl::Trunc(left, absl::Minutes(1))),
               ": renew it (SIGHUP, or the check every minute, takes the new one)");
  }
}

}  // namespace

RpcServer::~RpcServer() {
  if (server_ != nullptr && !Shutdown(absl::ZeroDuration())) {
    // Destroying the contexts under a call still running would be a use after free.
    LogError("calls did not end after they were cancelled: exiting without cleaning up");
    std::fflush(nullptr);
    ::_exit(1);
  }
}

absl::Status RpcServer::OpenListeners(grpc::ServerBuilder& builder) {
  const TransportSecurity& security = options_.security;
  if (security.UsesTls()) {
    absl::StatusOr<std::unique_ptr<TlsFiles>> files = TlsFiles::Open(security);
    if (!files.ok()) return files.status();
    tls_files_ = *std::move(files);
  }
  std::shared_ptr<grpc::ServerCredentials> tcp_credentials =
      TcpServerCredentials(security, tls_files_.get());
  // Over TLS the token is checked before a call's request is read (bearer_token_processor.h);
  // gRPC offers that hook for secure credentials only.
  if (token_processor_ != nullptr) tcp_credentials->SetAuthMetadataProcessor(token_processor_);
  std::vector<listen::ListeningSocket> sockets;
  absl::Cleanup close_on_error = [&sockets] {
    for (listen::ListeningSocket& socket : sockets) {
      ::close(socket.fd);
      listen::RemoveOwnSocketFile(socket);
    }
  };
  for (const std::string& address : options_.listen) {
    absl::StatusOr<std::vector<listen::ListeningSocket>> opened =
        listen::OpenListeningSockets(address, {.gid = security.socket_gid});
    if (!opened.ok()) return opened.status();
    for (listen::ListeningSocket& socket : *opened) sockets.push_back(std::move(socket));
  }
  for (const listen::ListeningSocket& socket : sockets) {
    if (socket.is_unix) continue;
    if (socket.loopback) {
      WarnIfOpenToLocalUsers(socket, security);
      continue;
    }
    if (!security.UsesTls() && !security.insecure) {
      return absl::FailedPreconditionError(absl::StrCat(
          "refusing to listen on ", socket.address, " in plaintext: anyone who can reach it "
          "could run functions and read what they return. Give --tls-cert and --tls-key "
          "(and --tls-client-ca or --auth-token-file to say who may call), listen on "
          "127.0.0.1 or a unix socket, or pass --insecure if the network is trusted"));
    }
    if (!security.UsesTls() && !security.auth_token_file.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "refusing to accept a bearer token in plaintext on ", socket.address,
          ": it would cross the network readable by anyone on the way; add --tls-cert and "
          "--tls-key"));
    }
    if (security.UsesTls() && security.auth_token_file.empty() &&
        security.tls_client_ca_file.empty() && !security.insecure) {
      return absl::FailedPreconditionError(absl::StrCat(
          "refusing to listen on ", socket.address, " with nothing to say who may call: TLS "
          "keeps the calls private, but anyone who can reach it could run functions. Give "
          "--auth-token-file or --tls-client-ca, listen on 127.0.0.1 or a unix socket, or pass "
          "--insecure if every host that can reach it may call"));
    }
  }
  WarnOfTcpSettingsWithoutTcp(sockets, security, options_.first_call_timeout);
  // Of the certificate a listener serves: none serves it on unix sockets alone.
  serves_tls_ = tls_files_ != nullptr &&
                std::any_of(sockets.begin(), sockets.end(),
                            [](const listen::ListeningSocket& socket) { return !socket.is_unix; });
  if (serves_tls_) WarnOfExpiry(*tls_files_);
  for (const listen::ListeningSocket& socket : sockets) {
    grpc_acceptors_.push_back(builder.experimental().AddExternalConnectionAcceptor(
        grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD,
        socket.is_unix ? grpc::InsecureServerCredentials() : tcp_credentials));
  }
  const int descriptor_cap = DescriptorCapForLimit();
  std::vector<uid_t> allowed_uids(security.allowed_uids.begin(), security.allowed_uids.end());
  AcceptPolicy policy{.allowed_uids = UnixSocketUsers(allowed_uids),
                      .descriptor_cap = descriptor_cap,
                      .tcp_descriptor_cap = TcpDescriptorCap(descriptor_cap),
                      .max_connections_per_peer = options_.max_connections_per_peer,
                      .probation = probation_.get(),
                      .tcp_tls = options_.security.UsesTls()};
  std::move(close_on_error).Cancel();
  std::vector<int> listener_fds;
  for (const listen::ListeningSocket& socket : sockets) listener_fds.push_back(socket.fd);
  acceptor_ = std::make_unique<ConnectionAcceptor>(
      std::move(sockets), std::move(policy), *refusals_,
      [this, listener_fds](size_t index, int fd) {
        grpc::experimental::ExternalConnectionAcceptor::NewConnectionParameters connection;
        connection.listener_fd = listener_fds[index];
        connection.fd = fd;
        grpc_acceptors_[index]->HandleNewConnection(&connection);
      });
  return absl::OkStatus();
}

void RpcServer::ReopenAccessLog() {
  if (access_log_ == nullptr || options_.security.access_log.empty()) return;
  if (absl::Status reopened = access_log_->Reopen(); !reopened.ok()) {
    LogError(reopened.message(), "; the access log goes on in the file opened before");
    return;
  }
  LogInfo("reopened the access log ", options_.security.access_log);
}

void RpcServer::ReloadTlsFiles(bool asked) {
  if (tls_files_ == nullptr) return;
  absl::StatusOr<bool> changed = tls_files_->Reload();
  if (!changed.ok()) {
    // Checked every minute: the same refusal is said once, not every minute.
    const std::string refusal(changed.status().message());
    if (asked || refusal != last_tls_refusal_) {
      LogError(refusal, "; new connections still get the certificate read before (",
               tls_files_->certificate(), ")");
    }
    last_tls_refusal_ = refusal;
    return;
  }
  last_tls_refusal_.clear();
  if (*changed || asked) {
    LogInfo(asked ? "read the TLS files again" : "the TLS files changed",
            ": within a second, new connections get the certificate ",
            tls_files_->certificate());
    if (serves_tls_) WarnOfExpiry(*tls_files_);
  }
}

void RpcServer::ReloadCredentials() {
  ReloadTlsFiles(/*asked=*/true);
  const std::string& file = options_.security.auth_token_file;
  if (tokens_ == nullptr || !tokens_->Required()) return;
  absl::StatusOr<std::vector<std::string>> read = ReadAuthTokens(file);
  if (!read.ok()) {
    LogError("--auth-token-file: ", read.status().message(),
             "; calls still need one of the tokens read before");
    return;
  }
  const size_t count = read->size();
  // Named by a fingerprint, never shown: enough for an operator to tell which lines were taken
  // (a file caught half-written by a reload would show a token nobody knows).
  std::vector<std::string> fingerprints;
  for (const std::string& token : *read) fingerprints.push_back(TokenFingerprint(token));
  tokens_->Replace(*std::move(read));
  LogInfo("read the bearer tokens again from ", file, ": ", count,
          count == 1 ? " token is" : " tokens are", " accepted from now on (SHA-256 beginning ",
          absl::StrJoin(fingerprints, ", "), ")");
}

absl::Status RpcServer::Start() {
  absl::StatusOr<std::unique_ptr<AccessLog>> access_log =
      AccessLog::Open(options_.security.access_log);
  if (!access_log.ok()) return access_log.status();
  access_log_ = std::move(*access_log);
  refusals_ = std::make_unique<RefusalLog>(*access_log_, kRefusalLogInterval);
  std::vector<std::string> tokens;
  if (!options_.security.auth_token_file.empty()) {
    absl::StatusOr<std::vector<std::string>> read =
        ReadAuthTokens(options_.security.auth_token_file);
    if (!read.ok()) return read.status();
    tokens = std::move(*read);
  }
  tokens_ = std::make_shared<AcceptedTokens>(std::move(tokens));
  if (tokens_->Required() && options_.security.UsesTls()) {
    token_processor_ = std::make_shared<BearerTokenProcessor>(tokens_, *refusals_);
  }
  probation_ = std::make_unique<ConnectionProbation>(
      absl::ToChronoNanoseconds(std::max(absl::ZeroDuration(), options_.first_call_timeout)));
  gate_ = std::make_unique<CallGate>(tokens_, *refusals_, probation_.get());

  // The health service is ours (health_service.h): gRPC's would bring two threads of its own
  // that poll every connection.
  grpc::EnableDefaultHealthCheckService(false);
  // Reflection only when asked for (--reflection): nothing cnp ships needs it (grpcurl can be
  // given the .proto files instead), and it is the one service gRPC runs with a thread per
  // stream. Open to anyone, 2,000 idle streams held 2,016 threads, near a host's PID limit.
  // When on, it needs the token where there is one (ReflectionGate; the AuthMetadataProcessor
  // over TLS), and gRPC may run it on kMaxReflectionThreads threads at most.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (absl::Status s = OpenListeners(builder); !s.ok()) return s;
  // The reflection service runs on gRPC's own synchronous threads; their default poll timeout
  // made every shutdown take 5 s longer than the calls in flight needed.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::CQ_TIMEOUT_MSEC, 200);
  if (!options_.reflection) {
    builder.SetOption(std::make_unique<WithoutReflection>());
  } else {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> gates;
    gates.push_back(std::make_unique<ReflectionGateFactory>(*gate_));
    builder.experimental().SetInterceptorCreators(std::move(gates));
  }
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  // What gRPC may hold of requests being received and answers being sent, all calls together:
  // past it gRPC cancels streams (RESOURCE_EXHAUSTED) instead of growing, so many large
  // requests at once - or a peer that sends most of each and withholds the rest - cannot take
  // the host's memory (--max-grpc-memory). It does not count all that an idle connection
  // costs (some 20 KB): how many connections there may be bounds that (connection_acceptor.h).
  // Nor does it count calls opened and never sent their requests, which cnp never sees: the
  // guard holds them to one per 64 KiB of the budget (4,100 with the defaults; each costs
  // gRPC 12-18 KB), at least 1,024. PING and SETTINGS frames not yet acknowledged are held to
  // one per 16 KiB (16,384 with the defaults; 2 to 4 KB each), at least 4,096.
  http2_guard::SetAwaitingCallLimit(
      std::max<int64_t>(1024, options_.max_grpc_memory_bytes / (int64_t{64} << 10)));
  http2_guard::SetUnacknowledgedLimit(
      std::max<int64_t>(4096, options_.max_grpc_memory_bytes / (int64_t{16} << 10)));
  grpc::ResourceQuota quota("cnp-server");
  quota.Resize(static_cast<size_t>(options_.max_grpc_memory_bytes));
  quota.SetMaxThreads(kMaxReflectionThreads);
  builder.SetResourceQuota(quota);
  // Identity messages only. The quota counts the bytes that arrive, not what they expand to,
  // and gRPC expands a message before any handler (and so the token check on a plaintext
  // listener) sees it: 50 tokenless connections sending 2.9 MB of gzip took the server from
  // 24 MB to 1.8 GB. gRPC now answers a compressed message UNIMPLEMENTED as soon as its
  // headers name the encoding, unread. None of cnp's clients compress.
  builder.SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_DEFLATE, false);
  builder.SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_GZIP, false);
  // And how many calls one connection may have open at once; a client past it waits for one
  // to end (gRPC queues it), which keeps one connection from opening thousands of streams.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, kMaxStreamsPerConnection);
  // A connection with no call open for this long gets a GOAWAY and is closed: idle clients
  // (and peers that stopped after a call) do not hold descriptors and memory for good. A
  // client reconnects at its next call. Connections that never make a call are closed much
  // sooner (--first-call-timeout, connection_probation.h).
  if (options_.max_connection_idle > absl::ZeroDuration()) {
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_IDLE_MS,
        static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(options_.max_connection_idle),
                                           std::numeric_limits<int>::max())));
  }
  // No bandwidth-delay-product probing: its HTTP/2 PINGs come after a call's answer too, and
  // nginx closes an idle upstream connection the moment anything arrives on it, so behind nginx
  // most calls paid a new TCP and HTTP/2 handshake (tests/scaleout/nginx_keepalive_test). The
  // window the probe would grow is fixed instead at the 4 MiB it started from.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  // cnp-adapter pings every 1.25 s (2 s before) while its Session stream is open, to find a
  // replica that stopped answering in the middle of a command; under gRPC's default (a ping per
  // 5 minutes while the server sends nothing) a quiet session got a GOAWAY (too_many_pings)
  // within 15 s. Less than its interval, for jitter; pings on a connection with no call open
  // are still held to gRPC's two hours.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 4 << 20);
  builder.SetMaxSendMessageSize(options_.max_message_bytes);
  builder.RegisterService(&service_);
  builder.RegisterService(health_.service());
  for (int i = 0; i < options_.threads; ++i) {
    contexts_.push_back(std::make_unique<grpc_asio::GrpcContext>(builder.AddCompletionQueue()));
  }
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) {
    acceptor_.reset();
    return absl::UnavailableError(absl::StrCat(
        "cannot start serving on ", absl::StrJoin(options_.listen, ", "),
        " (see gRPC's message above; a bad TLS certificate or key?)"));
  }
  for (const listen::ListeningSocket& socket : acceptor_->sockets()) {
    LogInfo("listening on ", socket.address,
            socket.is_unix ? InWorkingDirectory(socket.address)
                           : absl::StrCat(" (port ", socket.port, ")"),
            // As the direct-session socket says it (session_listener.cc): which sockets are
            // the socket unit's, and so whose ListenStream= to change.
            socket.inherited ? " (passed by systemd)" : "",
            socket.is_unix || tls_files_ == nullptr ? ""
            : absl::StrCat(options_.security.tls_client_ca_file.empty() ? " with TLS"
                                                                        : " with mutual TLS",
                           " (certificate ", tls_files_->certificate(), ")"),
            socket.is_unix || options_.security.auth_token_file.empty() ? ""
                                                                       : ", bearer token required");
  }
  health_.SetServing(true);
  const int upload_threads = std::max(1, options_.upload_threads);
  const int waiting_uploads = std::max(0, options_.max_waiting_uploads);
  uploads_.emplace(upload_threads);
  upload_limit_.emplace(
      upload_threads + waiting_uploads,
      absl::StrCat("the server is busy with ", upload_threads, " uploads and ", waiting_uploads,
                   " more waiting for them (--max-waiting-uploads); try again once one has "
                   "finished"));
  for (auto& context : contexts_) {
    ListenAll(*context);
    threads_.emplace_back([context = context.get()] { context->Run(); });
  }
  acceptor_->Start();
  return absl::OkStatus();
}

void RpcServer::ListenAll(grpc_asio::GrpcContext& context) {
  health_.Listen(context, shutdown_, &PeerOf);
  calls::FunctionCalls& calls = calls_;
  const CallGate& gate = *gate_;
  const absl::Span<const RepeatedFieldCap> caps = request_caps_;
  // A unary call: admitted, awaited (cancelled with the call), answered, all on the context's
  // thread; measured from admission to answer. Its request and answer are bytes: `compute`
  // parses the request, once the call is admitted (request_parsing.h).
  //
  // What it holds outside gRPC's quota is counted against the server's CallMemory: its request
  // (kRequestCopies times its bytes) from admission, before it waits for a worker, until
  // `compute` is done with it; a Map's answer as it grows (calls::AnswerGrowth: many function
  // names make an answer many times its request); then its answer alone until gRPC has sent it
  // (CallMemory::HoldWhileSent). Past the budget the call is refused RESOURCE_EXHAUSTED. An
  // answer its client has not taken --call-timeout after it was ready has its call cancelled
  // (unary_call.h), which frees it.
  using Unary = UnaryMethod<Service, grpc::ByteBuffer, grpc::ByteBuffer>;
  CallMemory& memory = call_memory_;
  const absl::Duration answer_timeout = calls.options().call_timeout;
  auto unary = [&](Unary::Requester requester, const char* name, auto compute) {
    Unary::Listen(
        context, service_, shutdown_, requester, name, &PeerOf,
        [&gate, &memory, name, compute, rpc = std::make_shared<metrics::RpcMetrics>(name)](
            grpc::ServerContext& server_context, grpc::ByteBuffer& request,
            grpc::ByteBuffer& response) -> asio::awaitable<grpc::Status> {
          // Measured on a clock that does not step (the deadline below is wall time).
          const auto start = std::chrono::steady_clock::now();
          grpc::Status status;
          const int64_t request_bytes =
              kRequestCopies * static_cast<int64_t>(request.Length());
          std::optional<CallMemory::Charge> held_request;
          if (absl::Status admitted = gate.Admit(server_context, name); !admitted.ok()) {
            status = ToGrpcStatus(admitted);
          } else if (held_request = memory.TryCharge(request_bytes); !held_request.has_value()) {
            request.Clear();
            metrics::CallMemoryRefused(name);
            status = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                  memory.RefusalMessage("its request", request_bytes));
          } else {
            // While the answer grows, the request's tasks are gone but for a wave's: what is
            // held is its bytes once and the answer, or the first charge if that is more (so
            // that one call of --max-call-bytes still fits twice that budget).
            calls::AnswerGrowth grown = [&](int64_t answer_bytes) {
              const int64_t held = std::max(
                  request_bytes, request_bytes / kRequestCopies + answer_bytes);
              if (held_request->Resize(held)) return absl::OkStatus();
              metrics::CallMemoryRefused(name);
              return absl::ResourceExhaustedError(
                  memory.RefusalMessage("its answer, as it was built,", answer_bytes));
            };
            // Named, not temporaries beside the co_await: GCC 12 mishandles those.
            const absl::Time deadline = ClientDeadline(server_context);
            grpc::Status computed = co_await compute(deadline, request, response, grown);
            status = WithStatusTrailers(std::move(computed), server_context);
            if (status.ok()) {
              // The request's charge becomes the answer's: it may shrink, or need more room.
              const auto answer_bytes = static_cast<int64_t>(response.Length());
              if (held_request->Resize(answer_bytes)) {
                response = CallMemory::HoldWhileSent(response, std::move(*held_request));
              } else {
                response.Clear();
                metrics::CallMemoryRefused(name);
                status = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                      memory.RefusalMessage("its answer", answer_bytes));
              }
            }
            held_request.reset();
          }
          const absl::Time end = absl::Now();
          const absl::Duration took = absl::FromChrono(std::chrono::steady_clock::now() - start);
          grpc::StatusCode code = status.error_code();
          // A call cancelled because its deadline passed is what its client saw: a deadline.
          // The client cancels at its own deadline, which comes before the server's copy of it
          // by the time the request took to arrive: a cancel that close to the deadline is the
          // deadline's (seen otherwise now and then in metrics_endpoint_test).
          if (code == grpc::StatusCode::CANCELLED &&
              end >= ClientDeadline(server_context) - kDeadlineCancelSlack) {
            code = grpc::StatusCode::DEADLINE_EXCEEDED;
          }
          rpc->CallEnded(static_cast<int>(code), took);
          co_return status;
        },
        answer_timeout);
  };
  // One of FunctionCalls' typed calls as a unary RPC.
  auto unary_call = [&]<class Request, class Response>(
                        Unary::Requester requester,
                        asio::awaitable<absl::Status> (calls::FunctionCalls::*method)(
                            Request&, absl::Time, Response&),
                        const char* name) {
    unary(requester, name,
          [&calls, method, name, caps](absl::Time deadline, grpc::ByteBuffer& request_bytes,
                                       grpc::ByteBuffer& response_bytes,
                                       const calls::AnswerGrowth&)
              -> asio::awaitable<grpc::Status> {
            Request request;
            if (absl::Status parsed = ParseRequest(request_bytes, name, request, caps);
                !parsed.ok()) {
              co_return ToGrpcStatus(parsed);
            }
            Response response;
            absl::Status status = co_await (calls.*method)(request, deadline, response);
            if (!status.ok()) co_return ToGrpcStatus(status);
            co_return SerializeResponse(response, response_bytes);
          });
  };
  unary(&Service::RequestMap, "Map",
      [&calls](absl::Time deadline, grpc::ByteBuffer& request, grpc::ByteBuffer& response,
               const calls::AnswerGrowth& grown) -> asio::awaitable<grpc::Status> {
        absl::Status status = co_await ServeEncodedMap(calls, deadline, request, response, grown);
        co_return ToGrpcStatus(status);
      });
  unary_call(&Service::RequestReduce, &calls::FunctionCalls::Reduce, "Reduce");
  unary_call(&Service::RequestValidate, &calls::FunctionCalls::Validate, "Validate");
  unary_call(&Service::RequestCallDesignFunction, &calls::FunctionCalls::CallDesignFunction,
             "CallDesignFunction");
  unary_call(&Service::RequestResolve, &calls::FunctionCalls::Resolve, "Resolve");

  // Streams carry bytes too, each message parsed by ParsingStreamHandler; a stream is admitted
  // before its first message is read. Each message, and each answer until its client has
  // taken it, is counted against the same CallMemory as a unary call's (stream_call.h).
  using MapStream = StreamMethod<Service, grpc::ByteBuffer, grpc::ByteBuffer>;
  const StreamLimits stream_limits{.memory = &call_memory_, .answer_timeout = answer_timeout};
  MapStream::Listen(
      context, service_, shutdown_, &Service::RequestMapStream, "MapStream", &PeerOf,
      stream_limits,
      [&calls, &gate](grpc::ServerContext& server_context) -> MapStream::FactoryResult {
        const uint64_t generation = gate.TokenGeneration();
        if (absl::Status admitted = gate.Admit(server_context, "MapStream"); !admitted.ok()) {
          return admitted;
        }
        return BoundToItsToken(std::make_unique<MapStreamHandler>(calls), gate, server_context,
                               "MapStream", generation);
      });

  using Session = StreamMethod<Service, grpc::ByteBuffer, grpc::ByteBuffer>;
  Session::Listen(
      context, service_, shutdown_, &Service::RequestSession, "Session", &PeerOf, stream_limits,
      [sessions = sessions_, &gate,
       caps](grpc::ServerContext& server_context) -> Session::FactoryResult {
        const uint64_t generation = gate.TokenGeneration();
        if (absl::Status admitted = gate.Admit(server_context, "Session"); !admitted.ok()) {
          return admitted;
        }
        std::unique_ptr<SessionHandler> session;
        if (sessions) session = sessions();
        if (session == nullptr) session = std::make_unique<UnavailableSession>();
        const auto& metadata = server_context.client_metadata();
        if (auto asked = metadata.find(kHeartbeatHeader); asked != metadata.end()) {
          const std::string_view value(asked->second.data(), asked->second.size());
          const std::optional<absl::Duration> interval = GrantedHeartbeat(value);
          if (!interval) {
            const absl::string_view shown(value.data(), std::min<size_t>(value.size(), 40));
            return absl::InvalidArgumentError(absl::StrCat(
                kHeartbeatHeader, ": \"", Printable(shown),
                "\" is not a whole number of milliseconds (",
                absl::ToInt64Milliseconds(kShortestHeartbeat), " to ",
                absl::ToInt64Milliseconds(kLongestHeartbeat), " are granted; 0: none)"));
          }
          if (*interval > absl::ZeroDuration()) {
            session = std::make_unique<HeartbeatingSession>(std::move(session), *interval);
          }
        }
        return BoundToItsToken(
            std::make_unique<ParsingStreamHandler<v1::SessionInput, v1::SessionOutput>>(
                std::move(session), "Session", caps),
            gate, server_context, "Session", generation);
      });

  using Upload = ServerStreamMethod<Service, v1::UploadRequest, v1::UploadEvent>;
  const AccessLog& access_log = *access_log_;
  // Admitted on the context's thread, before its request is parsed and before the call waits
  // for an upload thread: a call without the token is refused at once, and every Upload let
  // in is in the access log even while it waits.
  Upload::Listen(
      context, service_, shutdown_, &Service::RequestUpload, "Upload", caps,
      [&gate](grpc::ServerContext& server_context) -> grpc::Status {
        return ToGrpcStatus(gate.Admit(server_context, "Upload"));
      },
      *upload_limit_, call_memory_,
      [&access_log](grpc::ServerContext& server_context, const v1::UploadRequest& request) {
        LogUpload(access_log, server_context, request);
      },
      uploads_->get_executor(), options_.upload_write_timeout,
      [upload = upload_, &stopping = stop_uploads_](
          grpc::ServerContext&, const v1::UploadRequest& request, const Upload::Emit& emit,
          std::stop_token call_ended) {
        if (!upload) {
          return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                              "this server does not serve uploads yet");
        }
        return ToGrpcStatus(RunUpload(upload, request, emit, call_ended, stopping));
      });
}

void RpcServer::SetServing(bool serving) { health_.SetServing(serving); }

void RpcServer::AskForWaitingCalls() {
  // gRPC cancels the calls that have arrived but that no method has asked for yet (each asks
  // for its next call only once one has come, on its context's thread) the moment it shuts
  // down, and a cancelled call is not retried: under load, a few calls of every graceful stop
  // were lost. So each method first asks for many more, which takes in every call waiting and
  // those that come until gRPC stops accepting; they are served within the grace. Those never
  // matched end with the queue, as ever.
  std::vector<std::shared_ptr<absl::Notification>> asked;
  for (auto& context : contexts_) {
    auto done = std::make_shared<absl::Notification>();
    asked.push_back(done);
    context->Post([listeners = shutdown_.ListenersOf(*context), done] {
      for (int i = 0; i < kCallsAskedForAtShutdown; ++i) {
        for (const std::function<void()>& ask_for_call : listeners) ask_for_call();
      }
      done->Notify();
    });
  }
  // A context busy for longer than this still asks, only later.
  const absl::Time until = absl::Now() + absl::Seconds(1);
  for (const auto& done : asked) done->WaitForNotificationWithDeadline(until);
}

bool RpcServer::Shutdown(absl::Duration grace, const std::function<void()>& stop_work) {
  if (server_ == nullptr) return true;
  // First: no new connections (gRPC would drop the ones handed to it from now on).
  acceptor_.reset();
  health_.Freeze();
  shutdown_.DrainStreams();
  const absl::Time deadline = absl::Now() + grace;
  AskForWaitingCalls();
  // gRPC stops accepting calls at once and waits for those in flight. Its own deadline comes
  // after ours: at ours, the calls still running are ours to report and to cancel (below). Had
  // gRPC cancelled them at that same moment, one could end before our wait saw the deadline
  // pass, and the grace's warning would be missing from the log.
  absl::Notification shut;  // gRPC's own shutdown is over: every connection closed
  std::thread shutter([this, deadline, &shut] {
    server_->Shutdown(absl::ToChronoTime(deadline + kGrpcDeadlineAfterOurs));
    shut.Notify();
  });
  // But gRPC alone ends late both ways: a handler still running (its worker computing) holds
  // its call past the deadline, and with no call left gRPC still waits for every client to
  // acknowledge its GOAWAY - which an idle synchronous client (an adapter waiting for CouchDB)
  // does only when its backup poller wakes, 5 s later. So wait for the calls here.
  bool ended = shutdown_.AwaitNoCalls(deadline);
  // Every call has ended, but a connection may still hold the last answers and statuses it has
  // not yet written: closing it now would lose them (the client would see its connection break
  // instead). Clients busy with the server close their connections as soon as they read that
  // GOAWAY; an idle one is not waited for long. Meanwhile a call gRPC matched before it stopped
  // accepting may be counted only now, once its context took its event: it is served within
  // the grace too, not cancelled below.
  while (ended &&
         !shut.WaitForNotificationWithTimeout(std::min(kConnectionsClose, deadline - absl::Now())) &&
         shutdown_.HasCalls()) {
    ended = shutdown_.AwaitNoCalls(deadline);
  }
  if (!ended) {
    LogWarning("calls still running after the ", absl::FormatDuration(grace),
               " grace: stopping them");
    stop_uploads_.request_stop();
    if (stop_work) stop_work();
    // Their workers and uploads are stopped: each call now answers UNAVAILABLE, saying that
    // the server shut down and to retry elsewhere. Cancelled at once below, the clients would
    // get gRPC's "Cancelling all calls" instead.
    shutdown_.AwaitNoCalls(absl::Now() + kStoppedCallsAnswer);
  }
  // Every call has ended, or is cancelled now (which cancels what its handler awaits and asks
  // an upload to stop): close the connections left without waiting.
  grpc_server_cancel_all_calls(server_->c_server());
  shutter.join();
  if (stop_work) stop_work();
  // The cancelled calls' coroutines need their contexts running to end.
  if (!shutdown_.AwaitNoCalls(absl::Now() + kCancelledCallsEnd)) {
    LogWarning("calls still running ", absl::FormatDuration(kCancelledCallsEnd),
               " after they were cancelled: stopping without them");
    refusals_->FlushAll();
    // Their coroutines would resume into destroyed contexts: leave everything as it is.
    return false;
  }
  // Each context shuts its queue down on its own thread, where every operation starts, so no
  // operation is ever started on a queue that is shut down (gRPC would abort the process).
  for (auto& context : contexts_) context->Shutdown();
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  // An upload still running finishes on its own; what it hands back to a context is dropped.
  uploads_->join();
  contexts_.clear();
  server_.reset();
  // No call's token is checked any more, and the acceptor's sweep, which wrote the counts owed
  // every second, is gone: the refusals of the last interval are written now or never.
  refusals_->FlushAll();
  return true;
}

}  // namespace cnp::rpc
