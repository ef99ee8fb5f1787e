// Where requests enter: the gRPC server, its threads (each running one completion queue as an
// Asio execution context, grpc_asio/grpc_context.h), and the table that routes each RPC of
// cnp.v1.Functions to the coroutine that serves it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/thread_pool.hpp"
#include "cnp/v1/functions.grpc.pb.h"
#include "grpcpp/server_builder.h"
#include "service/grpc_asio/grpc_context.h"
#include "service/rpc/access_log.h"
#include "service/rpc/accepted_tokens.h"
#include "service/rpc/bearer_token_processor.h"
#include "service/rpc/blocking_call_limit.h"
#include "service/rpc/call_gate.h"
#include "service/rpc/call_memory.h"
#include "service/rpc/connection_acceptor.h"
#include "service/rpc/health_service.h"
#include "service/rpc/shutdown_gate.h"
#include "service/calls/function_calls.h"
#include "service/rpc/wire_shape.h"
#include "service/rpc/stream_call.h"
#include "service/rpc/tls_files.h"
#include "service/rpc/transport_security.h"

namespace cnp::rpc {

// One CouchDB session (the Session stream): its lines awaited one at a time.
using SessionHandler = StreamHandler<v1::SessionInput, v1::SessionOutput>;
using SessionFactory = std::function<std::unique_ptr<SessionHandler>()>;

using UploadEmit = std::function<bool(const v1::UploadEvent&)>;
// Runs on the server's upload executor. `stop` is requested when the call is cancelled (client
// gone, deadline, shutdown): the upload should end between its steps.
using UploadHandler = std::function<absl::Status(const v1::UploadRequest&, const UploadEmit&,
                                                 std::stop_token stop)>;

// cnp.v1.Functions on the async API, every method on its wire form: requests arrive as bytes
// and are parsed by our code once the call is admitted (request_parsing.h), Map's by its own
// reader (encoded_map_call.h).
using FunctionsService = v1::Functions::WithRawMethod_Map<
    v1::Functions::WithRawMethod_MapStream<v1::Functions::WithRawMethod_Reduce<
        v1::Functions::WithRawMethod_Validate<v1::Functions::WithRawMethod_CallDesignFunction<
            v1::Functions::WithRawMethod_Resolve<v1::Functions::WithRawMethod_Upload<
                v1::Functions::WithRawMethod_Session<v1::Functions::Service>>>>>>>>;

// Enough for the connections one host's clients need (an adapter or a client program holds one,
// nginx one per call in flight), far from all the server can hold.
inline constexpr int kDefaultMaxConnectionsPerPeer = 1024;

struct ServerOptions {
  std::vector<std::string> listen;  // "unix:/path", "127.0.0.1:50051", "[::1]:7070", ...
  TransportSecurity security;
  // Completion queues, each an execution context run by its own thread.
  int threads = 2;
  // Threads that run uploads (each holds one for its whole run; more wait their turn).
  int upload_threads = 2;
  // Uploads admitted that may wait for an upload thread; more are refused RESOURCE_EXHAUSTED.
  int max_waiting_uploads = 8;
  // How long an Upload's event may wait for its client to take it (--call-timeout): past it the
  // call is cancelled and its upload thread freed (server_stream_call.h).
  absl::Duration upload_write_timeout = absl::Seconds(60);
  // The largest request or response (--max-call-bytes).
  int max_message_bytes = 64 << 20;
  // What gRPC may buffer for every call together (--max-grpc-memory); not all that connections
  // cost, which the connection limits below bound.
  int64_t max_grpc_memory_bytes = int64_t{256} << 20;
  // TCP connections one peer address may have open at once (--max-connections-per-peer); 0: any.
  int max_connections_per_peer = kDefaultMaxConnectionsPerPeer;
  // A TCP connection that makes no admitted call this soon after connecting is closed
  // (--first-call-timeout); zero: never.
  absl::Duration first_call_timeout = absl::ZeroDuration();
  // gRPC closes (GOAWAY) a connection that has had no call open for this long
  // (--max-connection-idle); its client reconnects at its next call. Zero: never.
  absl::Duration max_connection_idle = absl::Minutes(5);
  // gRPC reflection (--reflection): off unless asked for, see rpc_server.cc.
  bool reflection = false;
};

// Threads gRPC may run reflection streams on (its synchronous server, the only part of cnp-server
// that has a thread per call); a stream past them is refused RESOURCE_EXHAUSTED.
inline constexpr int kMaxReflectionThreads = 4;

// Calls one connection may have open at once (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS). 100 is
// what HTTP/2 recommends at least; cnp's own clients open one stream per call, cnp-adapter one
// Session stream per connection.
inline constexpr int kMaxStreamsPerConnection = 100;

class RpcServer {
 public:
  RpcServer(ServerOptions options, calls::FunctionCalls& calls, SessionFactory sessions,
            UploadHandler upload);
  ~RpcServer();

  // Binds every address and starts the polling threads. Refuses a plaintext TCP listener on
  // an address other than loopback unless `security.insecure`.
  absl::Status Start();
  // What the gRPC health service reports for the whole server and each service: false turns
  // it NOT_SERVING (watchers are told at once) while calls are still served - the drain before
  // a shutdown, so that load balancers stop sending first.
  void SetServing(bool serving);
  // SIGHUP: the access log file is opened anew at its path (a rotation renamed it); an error
  // is logged and the log goes on where it was. Only after Start has returned.
  void ReopenAccessLog();
  // SIGHUP: the TLS files (tls_files.h) and the bearer tokens (--auth-token-file,
  // accepted_tokens.h) are read again; files that cannot be read or do not pass the checks
  // made at start (a key that is not the certificate's, a token file with no token) are
  // logged and what was read before stays. Only after Start has returned.
  void ReloadCredentials();
  // Every minute, so that a certificate renewed without a SIGHUP (a secret mounted in a
  // container, a renewal without a deploy hook) is served too: the TLS files read again as
  // SIGHUP does, said in the log when they changed or a change is refused. On the thread
  // that sends SIGHUP's reloads.
  void FollowTlsFiles() { ReloadTlsFiles(/*asked=*/false); }
  // Stops accepting calls, ends idle streams, lets calls in flight finish for up to `grace`,
  // then stops the work of the rest (uploads are told to stop, and `stop_work` runs) so that
  // they answer that the server shut down, cancels what is left a second later and joins the
  // threads. `stop_work` runs once gRPC has let go of every call (those left cancelled), and
  // before that too when the grace ends with calls still running: once or twice, so it must be
  // idempotent. It must make handlers still running return soon (the pool kills the workers
  // they wait for). Must not be called from a server thread.
  //
  // Returns false when calls were still running 10 s after they were cancelled (a handler
  // stuck where it cannot see its cancellation). Their coroutines still refer to the contexts
  // and the gRPC server, so those are left as they are (threads running): the caller must then
  // end the process without running destructors (_exit), and must not destroy the RpcServer.
  [[nodiscard]] bool Shutdown(absl::Duration grace,
                              const std::function<void()>& stop_work = nullptr);

 private:
  void ListenAll(grpc_asio::GrpcContext& context);
  // Before gRPC shuts down: every method asks for the calls waiting for it (see there).
  void AskForWaitingCalls();
  // Reads the TLS files again; `asked` (a SIGHUP): always said in the log, else only a change
  // or a new refusal.
  void ReloadTlsFiles(bool asked);
  // Opens the listening sockets and registers one gRPC acceptor for each.
  absl::Status OpenListeners(grpc::ServerBuilder& builder);

  const ServerOptions options_;
  std::unique_ptr<AccessLog> access_log_;
  // Refused connections and calls, one line per peer and reason per interval: written by the
  // acceptor, the call gate and the TLS token check, flushed by the acceptor's sweep.
  std::unique_ptr<RefusalLog> refusals_;
  std::unique_ptr<ConnectionProbation> probation_;  // before what refers to it
  std::shared_ptr<AcceptedTokens> tokens_;
  std::unique_ptr<TlsFiles> tls_files_;  // TLS only; before the server that reads them
  bool serves_tls_ = false;               // a TCP listener serves tls_files_' certificate
  std::string last_tls_refusal_;         // what the last check of the TLS files refused
  std::unique_ptr<CallGate> gate_;
  std::shared_ptr<BearerTokenProcessor> token_processor_;  // TLS with a token only
  std::vector<std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor>> grpc_acceptors_;
  std::unique_ptr<ConnectionAcceptor> acceptor_;
  calls::FunctionCalls& calls_;
  // What each request's repeated fields may hold (request_parsing.h), for every method.
  const std::vector<RepeatedFieldCap> request_caps_;
  // What unary calls hold outside gRPC's quota (their requests, their answers until sent),
  // bounded by --max-grpc-memory too (call_memory.h).
  CallMemory call_memory_;
  SessionFactory sessions_;
  UploadHandler upload_;
  FunctionsService service_;
  // Declared before what may hold calls, so that it outlives them.
  ShutdownGate shutdown_;
  // What grpc.health.v1 reports, overall ("") and for cnp.v1.Functions alike.
  HealthService health_{{v1::Functions::service_full_name()}};
  // Requested past the shutdown grace, with `stop_work`: every upload still running stops and
  // says that the server shut down (RunUpload in rpc_server.cc).
  std::stop_source stop_uploads_;
  std::optional<asio::thread_pool> uploads_;
  std::optional<BlockingCallLimit> upload_limit_;  // the uploads running or waiting for uploads_
  std::vector<std::unique_ptr<grpc_asio::GrpcContext>> contexts_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::thread> threads_;
};

}  // namespace cnp::rpc
