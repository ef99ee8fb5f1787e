// Where requests enter: the gRPC server, its completion-queue threads, and the table that
// routes each RPC of cnp.v1.Functions to the code that serves it.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "grpcpp/server_builder.h"
#include "service/rpc/access_log.h"
#include "service/rpc/call_gate.h"
#include "service/rpc/connection_acceptor.h"
#include "service/rpc/shutdown_gate.h"
#include "service/rpc/function_calls.h"
#include "service/rpc/queue_thread.h"
#include "service/rpc/server_stream_call.h"
#include "service/rpc/stream_call.h"
#include "service/rpc/transport_security.h"

namespace cnp::rpc {

using SessionHandler = StreamHandler<v1::SessionInput, v1::SessionOutput>;
using UploadEmit = std::function<bool(const v1::UploadEvent&)>;
using UploadHandler = std::function<absl::Status(const v1::UploadRequest&, const UploadEmit&)>;

// cnp.v1.Functions on the async API, with Map served on its wire form (encoded_map_call.h).
using FunctionsService = v1::Functions::WithRawMethod_Map<
    v1::Functions::WithAsyncMethod_MapStream<v1::Functions::WithAsyncMethod_Reduce<
        v1::Functions::WithAsyncMethod_Validate<v1::Functions::WithAsyncMethod_CallDesignFunction<
            v1::Functions::WithAsyncMethod_Resolve<v1::Functions::WithAsyncMethod_Upload<
                v1::Functions::WithAsyncMethod_Session<v1::Functions::Service>>>>>>>>;

struct ServerOptions {
  std::vector<std::string> listen;  // "unix:/path", "127.0.0.1:50051", "[::1]:7070", ...
  TransportSecurity security;
  // Completion queues, each served by its own thread (see queue_thread.h).
  int threads = 4;
  // The largest request or response (--max-call-bytes).
  int max_message_bytes = 64 << 20;
};

class RpcServer {
 public:
  RpcServer(ServerOptions options, FunctionCalls& calls,
            std::function<std::unique_ptr<SessionHandler>()> sessions, UploadHandler upload);
  ~RpcServer();

  // Binds every address and starts the polling threads. Refuses a plaintext TCP listener on
  // an address other than loopback unless `security.insecure`.
  absl::Status Start();
  // What the gRPC health service reports for the whole server and each service: false turns
  // it NOT_SERVING (watchers are told at once) while calls are still served - the drain before
  // a shutdown, so that load balancers stop sending first.
  void SetServing(bool serving);
  // Stops accepting calls, ends idle streams, lets calls in flight finish for up to `grace`,
  // then cancels the rest and joins the threads. `stop_work` runs once the grace is over, or
  // once gRPC has let go of every call, whichever comes first: it must make handlers still
  // running return soon (the pool kills the workers they wait for). Must not be called from a
  // polling thread.
  void Shutdown(absl::Duration grace, const std::function<void()>& stop_work = nullptr);

 private:
  void ListenAll(grpc::ServerCompletionQueue* cq);
  // Opens the listening sockets and registers one gRPC acceptor for each.
  absl::Status OpenListeners(grpc::ServerBuilder& builder);

  const ServerOptions options_;
  std::unique_ptr<AccessLog> access_log_;
  std::unique_ptr<CallGate> gate_;
  std::vector<std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor>> grpc_acceptors_;
  std::unique_ptr<ConnectionAcceptor> acceptor_;
  FunctionCalls& calls_;
  std::function<std::unique_ptr<SessionHandler>()> sessions_;
  UploadHandler upload_;
  FunctionsService service_;
  ShutdownGate shutdown_;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::unique_ptr<QueueThread>> threads_;
};

}  // namespace cnp::rpc
