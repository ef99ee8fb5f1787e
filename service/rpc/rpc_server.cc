#include "service/rpc/rpc_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "service/common/log.h"
#include "service/rpc/unary_call.h"

namespace cnp::rpc {
namespace {

using Service = v1::Functions::AsyncService;

absl::Time ClientDeadline(const grpc::ServerContext& context) {
  auto deadline = context.deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

// Gets a unix socket path ready for binding: its directory exists, and a socket file left by a
// server that died is removed - but one that still answers is not stolen.
absl::Status PrepareUnixSocket(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the socket path ", path, " is longer than the ", sizeof addr.sun_path - 1,
        " bytes a unix socket address can hold; choose a shorter one"));
  }
  std::string dir = path.substr(0, path.rfind('/'));
  if (!dir.empty() && ::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create the socket directory ", dir, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return absl::OkStatus();
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " exists and is not a socket; remove it or listen elsewhere"));
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool alive = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  if (alive) {
    return absl::AlreadyExistsError(
        absl::StrCat("another server already listens on ", path, "; stop it or listen elsewhere"));
  }
  ::unlink(path.c_str());
  return absl::OkStatus();
}

template <class Request, class Response>
class MapStreamHandler final : public StreamHandler<Request, Response> {
 public:
  explicit MapStreamHandler(FunctionCalls& calls) : calls_(calls) {}
  absl::StatusOr<std::optional<Response>> Handle(Request& request) override {
    Response response;
    if (absl::Status s = calls_.Map(request, absl::InfiniteFuture(), response); !s.ok()) return s;
    return response;
  }

 private:
  FunctionCalls& calls_;
};

class UnavailableSession final : public SessionHandler {
 public:
  absl::StatusOr<std::optional<v1::SessionOutput>> Handle(v1::SessionInput&) override {
    return absl::UnimplementedError("this server does not serve CouchDB sessions");
  }
};

}  // namespace

RpcServer::RpcServer(ServerOptions options, FunctionCalls& calls,
                     std::function<std::unique_ptr<SessionHandler>()> sessions,
                     UploadHandler upload)
    : options_(std::move(options)), calls_(calls), sessions_(std::move(sessions)),
      upload_(std::move(upload)) {}

RpcServer::~RpcServer() {
  if (server_ != nullptr) Shutdown(absl::ZeroDuration());
}

absl::Status RpcServer::Start() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::vector<std::unique_ptr<int>> ports;
  for (const std::string& address : options_.listen) {
    if (absl::StartsWith(address, "unix:")) {
      std::string path = address.substr(5);
      if (absl::StartsWith(path, "//")) path = path.substr(2);
      if (absl::Status s = PrepareUnixSocket(path); !s.ok()) return s;
    }
    ports.push_back(std::make_unique<int>(0));
    builder.AddListeningPort(address, grpc::InsecureServerCredentials(), ports.back().get());
  }
  // The reflection service runs on gRPC's own synchronous threads; their default poll timeout
  // made every shutdown take 5 s longer than the calls in flight needed.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::CQ_TIMEOUT_MSEC, 200);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.SetMaxSendMessageSize(options_.max_message_bytes);
  builder.RegisterService(&service_);
  for (int i = 0; i < options_.threads; ++i) queues_.push_back(builder.AddCompletionQueue());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", absl::StrJoin(options_.listen, ", "),
        " (address in use, bad address, or no permission)"));
  }
  for (size_t i = 0; i < options_.listen.size(); ++i) {
    if (!absl::StartsWith(options_.listen[i], "unix:") && *ports[i] == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen[i]));
    }
    LogInfo("listening on ", options_.listen[i],
            absl::StartsWith(options_.listen[i], "unix:") ? "" : absl::StrCat(" (port ", *ports[i], ")"));
  }
  server_->GetHealthCheckService()->SetServingStatus(true);
  for (auto& queue : queues_) {
    ListenAll(queue.get());
    threads_.push_back(std::make_unique<QueueThread>(queue.get()));
  }
  return absl::OkStatus();
}

void RpcServer::ListenAll(grpc::ServerCompletionQueue* cq) {
  FunctionCalls& calls = calls_;
  auto unary = [&]<class Request, class Response>(
                   auto requester,
                   absl::Status (FunctionCalls::*method)(Request&, absl::Time, Response&)) {
    using C = UnaryCall<Service, Request, Response>;
    auto handler = std::make_shared<const typename C::Handler>(
        [&calls, method](grpc::ServerContext& context, Request& request, Response& response) {
          return ToGrpcStatus((calls.*method)(request, ClientDeadline(context), response));
        });
    C::Listen(&service_, cq, requester, std::move(handler));
  };
  unary(&Service::RequestMap, &FunctionCalls::Map);
  unary(&Service::RequestReduce, &FunctionCalls::Reduce);
  unary(&Service::RequestValidate, &FunctionCalls::Validate);
  unary(&Service::RequestCallDesignFunction, &FunctionCalls::CallDesignFunction);
  unary(&Service::RequestResolve, &FunctionCalls::Resolve);

  using MapStream = StreamCall<Service, v1::MapRequest, v1::MapResponse>;
  MapStream::Listen(&service_, cq, &Service::RequestMapStream,
                    std::make_shared<const MapStream::Factory>([&calls] {
                      return std::make_unique<MapStreamHandler<v1::MapRequest, v1::MapResponse>>(
                          calls);
                    }));

  using Session = StreamCall<Service, v1::SessionInput, v1::SessionOutput>;
  auto sessions = sessions_;
  Session::Listen(&service_, cq, &Service::RequestSession,
                  std::make_shared<const Session::Factory>(
                      [sessions]() -> std::unique_ptr<SessionHandler> {
                        if (sessions) return sessions();
                        return std::make_unique<UnavailableSession>();
                      }));

  using Upload = ServerStreamCall<Service, v1::UploadRequest, v1::UploadEvent>;
  auto upload = upload_;
  Upload::Listen(&service_, cq, &Service::RequestUpload,
                 std::make_shared<const Upload::Handler>(
                     [upload](grpc::ServerContext&, const v1::UploadRequest& request,
                              const Upload::Emit& emit) {
                       if (!upload) {
                         return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                             "this server does not serve uploads yet");
                       }
                       return ToGrpcStatus(upload(request, emit));
                     }));
}

void RpcServer::Shutdown(absl::Duration grace) {
  if (server_ == nullptr) return;
  server_->GetHealthCheckService()->SetServingStatus(false);
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  for (auto& queue : queues_) queue->Shutdown();
  threads_.clear();  // joins, once each queue is shut down and drained
  server_.reset();
}

}  // namespace cnp::rpc
