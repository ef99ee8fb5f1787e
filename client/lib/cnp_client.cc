#include "client/lib/cnp_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <optional>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/lib/channel_target.h"
#include "common/call_limit.h"
#include "common/socket_trust.h"
#include "common/unix_target.h"
#include "grpcpp/grpcpp.h"

namespace cnp::client {
namespace {

constexpr int kMaxMessageBytes = 256 << 20;
// The payload FromGrpc marks a call no server answered with (IsServerUnreachable).
constexpr char kServerUnreachable[] = "cnp.client/server-unreachable";

// Whether a process on the unix socket at `path` accepts a connection and closes it at once
// (within 200 ms, before any byte), as cnp-server does with a peer it does not allow; a slow
// server, or one that speaks, is not that.
bool ClosesConnectionsAtOnce(const std::string& path) {
  sockaddr_un address{};
  if (path.size() >= sizeof(address.sun_path)) return false;
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool closed = false;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) {
    pollfd wait{fd, POLLIN, 0};
    char byte;
    closed = ::poll(&wait, 1, 200) == 1 && ::recv(fd, &byte, 1, MSG_DONTWAIT) == 0;
  }
  ::close(fd);
  return closed;
}

// The limit in gRPC's refusal of a message over it, "Received message larger than max (150123
// vs. 100000)"; 0 when it is not there.
int64_t GrpcMessageLimit(absl::string_view message) {
  constexpr absl::string_view kBefore = " vs. ";
  const size_t at = message.rfind(kBefore);
  if (at == absl::string_view::npos) return 0;
  absl::string_view rest = message.substr(at + kBefore.size());
  rest = rest.substr(0, rest.find(')'));
  int64_t limit = 0;
  return absl::SimpleAtoi(rest, &limit) && limit > 0 ? limit : 0;
}

}  // namespace

bool IsServerUnreachable(const absl::Status& status) {
  return absl::IsUnavailable(status) && status.GetPayload(kServerUnreachable).has_value();
}

std::string ServerDownAdvice(const std::string& target) {
  // Several replicas (a list, or a name resolving to several): one server listening on them
  // all would be no replicas at all.
  if (absl::StrContains(target, ',') || absl::StartsWith(target, "dns:")) {
    return absl::StrCat("no cnp-server answers at any of ", target,
                        "; start a replica at each address (`cnp-server --listen=HOST:PORT "
                        "--python-path=DIR` on each) or point --target (or CNP_TARGET) at "
                        "running ones");
  }
  return absl::StrCat("no cnp-server answers at ", target,
                      "; start one with `cnp-server --listen=", target,
                      " --python-path=DIR` or point --target (or CNP_TARGET) at a running one");
}

Client::Client(std::string target, std::shared_ptr<grpc::Channel> channel,
               std::string authorization)
    : target_(std::move(target)), authorization_(std::move(authorization)),
      channel_(std::move(channel)), stub_(v1::Functions::NewStub(channel_)) {}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& target,
                                                        absl::Duration connect_timeout) {
  return Connect(target, ChannelSecurity{}, connect_timeout);
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& target,
                                                        const ChannelSecurity& security,
                                                        absl::Duration connect_timeout,
                                                        RetryPolicy retry) {
  const bool unix_socket = IsUnixTarget(target);
  std::string path;
  if (unix_socket) {
    absl::StatusOr<std::string> unix_path = UnixSocketPath(target);
    if (!unix_path.ok()) return unix_path.status();
    path = *std::move(unix_path);
    // Checked before connecting: what answers in a directory someone else owns may be theirs.
    absl::StatusOr<SocketTrust> trust = SocketTrust::WithServerUser(security.server_user);
    if (!trust.ok()) return trust.status();
    if (absl::Status s = trust->CheckSocket(path); !s.ok()) {
      // No directory, no server: said at once, since gRPC would keep connecting while anyone
      // could create it.
      if (absl::IsUnavailable(s)) {
        return absl::UnavailableError(absl::StrCat(ServerDownAdvice(target), " (", s.message(), ")"));
      }
      return s;
    }
  }
  absl::StatusOr<std::string> uri = ChannelTargetUri(target);
  if (!uri.ok()) return uri.status();
  absl::StatusOr<LoadedChannelSecurity> loaded = LoadChannelSecurity(security, target);
  if (!loaded.ok()) return loaded.status();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  args.SetServiceConfigJSON(ClientServiceConfig(retry));
  if (retry == RetryPolicy::kNone) args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  // gRPC keeps a call's request for a retry only up to this many bytes (default 256 KiB, past
  // which a call is no longer retried): every request this client may send stays retryable.
  args.SetInt(GRPC_ARG_PER_RPC_RETRY_BUFFER_SIZE, kMaxMessageBytes);
  auto channel = grpc::CreateCustomChannel(*uri, loaded->credentials, args);
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + connect_timeout))) {
    if (unix_socket && ClosesConnectionsAtOnce(path)) {
      // cnp-server closes a connection from a uid it does not allow before it says anything.
      return absl::PermissionDeniedError(absl::StrCat(
          "cnp-server at ", target, " accepts connections but closed this one at once: it "
          "does not allow this user (uid ", ::getuid(), "; see the server's --allow-uid) or is "
          "at its connection limit; its log says which"));
    }
    return absl::UnavailableError(
        security.UsesTls() ? absl::StrCat(ServerDownAdvice(target),
                                          " (or the TLS handshake failed: check --tls-ca, and "
                                          "--tls-cert/--tls-key if the server requires a client "
                                          "certificate)")
                           : ServerDownAdvice(target));
  }
  return std::unique_ptr<Client>(
      new Client(target, std::move(channel), std::move(loaded->authorization)));
}

void Client::PrepareContext(grpc::ClientContext& context, absl::Duration timeout) const {
  if (timeout != absl::InfiniteDuration()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
  if (!authorization_.empty()) context.AddMetadata("authorization", authorization_);
}

absl::Status Client::FromGrpc(const grpc::Status& status) const {
  if (status.ok()) return absl::OkStatus();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
      channel_->GetState(false) != GRPC_CHANNEL_READY) {
    absl::Status unreachable = absl::UnavailableError(
        absl::StrCat(status.error_message(), " (", ServerDownAdvice(target_), ")"));
    unreachable.SetPayload(kServerUnreachable, absl::Cord());
    return unreachable;
  }
  // gRPC itself refuses a request over the server's receive limit (--max-call-bytes) before
  // any of cnp-server's code sees it, so no trailer says so: its own words are the one sign
  // there is, and they are read here, once, into the same mark the server's refusals carry.
  // Say which setting that limit is. (A response over this client's own receive limit, 256 MiB,
  // reads the same: only a server whose --max-call-bytes is above it can send one.)
  if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
      absl::StrContains(status.error_message(), "larger than max")) {
    return WithCallLimit(
        absl::ResourceExhaustedError(absl::StrCat(
            status.error_message(), " (the request is over cnp-server's --max-call-bytes: send "
            "fewer or smaller documents per call, or raise that flag)")),
        {CallLimit::Kind::kRequest, GrpcMessageLimit(status.error_message())});
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

void Client::ResetConnectionBackoff() { grpc::experimental::ChannelResetConnectionBackoff(channel_.get()); }

absl::Status Client::FromGrpc(const grpc::Status& status,
                              const grpc::ClientContext& context) const {
  absl::Status converted = FromGrpc(status);
  if (converted.ok() || CallLimitOf(converted).has_value()) return converted;
  const std::multimap<grpc::string_ref, grpc::string_ref>& trailers =
      context.GetServerTrailingMetadata();
  auto trailer = trailers.find(kCallLimitTrailer);
  if (trailer == trailers.end()) return converted;
  std::optional<CallLimit> limit =
      ParseCallLimit(absl::string_view(trailer->second.data(), trailer->second.size()));
  // A value this client does not read (a newer server's kind) is no mark it can act on.
  return limit.has_value() ? WithCallLimit(std::move(converted), *limit) : converted;
}

absl::StatusOr<v1::MapResponse> Client::Map(const std::vector<std::string>& functions,
                                            const std::vector<std::string>& docs,
                                            absl::Duration timeout) {
  v1::MapRequest request;
  for (const std::string& f : functions) request.add_functions(f);
  for (const std::string& d : docs) request.add_docs(d);
  grpc::ClientContext context;
  PrepareContext(context, timeout);
  v1::MapResponse response;
  absl::Status s = FromGrpc(stub_->Map(&context, request, &response), context);
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<v1::ReduceResponse> Client::Reduce(const std::vector<std::string>& functions,
                                                  const std::string& kvs, bool rereduce,
                                                  absl::Duration timeout) {
  v1::ReduceRequest request;
  for (const std::string& f : functions) request.add_functions(f);
  request.set_kvs(kvs);
  request.set_rereduce(rereduce);
  grpc::ClientContext context;
  PrepareContext(context, timeout);
  v1::ReduceResponse response;
  absl::Status s = FromGrpc(stub_->Reduce(&context, request, &response), context);
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<v1::ValidateResponse> Client::Validate(const v1::ValidateRequest& request,
                                                      absl::Duration timeout) {
  grpc::ClientContext context;
  PrepareContext(context, timeout);
  v1::ValidateResponse response;
  absl::Status s = FromGrpc(stub_->Validate(&context, request, &response), context);
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<v1::DesignFunctionResponse> Client::CallDesignFunction(
    const v1::DesignFunctionRequest& request, absl::Duration timeout) {
  grpc::ClientContext context;
  PrepareContext(context, timeout);
  v1::DesignFunctionResponse response;
  absl::Status s = FromGrpc(stub_->CallDesignFunction(&context, request, &response), context);
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<v1::ResolveResponse> Client::Resolve(const std::vector<std::string>& functions,
                                                    absl::Duration timeout) {
  v1::ResolveRequest request;
  for (const std::string& f : functions) request.add_functions(f);
  grpc::ClientContext context;
  PrepareContext(context, timeout);
  v1::ResolveResponse response;
  absl::Status s = FromGrpc(stub_->Resolve(&context, request, &response), context);
  if (!s.ok()) return s;
  return response;
}

}  // namespace cnp::client
