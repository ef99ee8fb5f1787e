#include "client/lib/cnp_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <optional>
#include <string_view>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/lib/channel_target.h"
#include "common/call_limit.h"
#include "common/retry_advice.h"
#include "common/socket_trust.h"
#include "common/unix_target.h"
#include "grpcpp/grpcpp.h"

namespace cnp::client {
namespace {

// The payloads FromGrpc marks a status with: no server answered (IsServerUnreachable); this
// client's own size limit refused the call (ClientLimitOf; the payload holds CallLimitText).
constexpr char kServerUnreachable[] = "cnp.client/server-unreachable";
constexpr char kClientLimit[] = "cnp.client/own-limit";

// Whether a process on the unix socket at `path` accepts a connection and closes it at once
// (within 200 ms, before any byte), as cnp-server does with a peer it does not allow; a slow
// server, or one that speaks, is not that. Never blocks longer: the connect does not wait for
// room in a full backlog (a stopped or swamped server's), which took the caller's
// connect_timeout and then for ever (a review).
bool ClosesConnectionsAtOnce(const std::string& path) {
  sockaddr_un address{};
  if (path.size() >= sizeof(address.sun_path)) return false;
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  // (A unix socket's non-blocking connect is queued at once or fails EAGAIN: never pending.)
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
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

// gRPC's refusal of a message over a limit, in its words: "Sent message larger than max (283115555
// vs. 268435456)" (this side's send limit) or "Received message larger than max (150123 vs.
// 100000)" (the receiving side's limit, which may be either side's).
struct GrpcSizeRefusal {
  bool sent;
  int64_t limit;  // 0 when the words do not say
};

std::optional<GrpcSizeRefusal> GrpcSizeRefusalOf(const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) return std::nullopt;
  // error_message() returns a copy: keep it for as long as it is read.
  const std::string message = status.error_message();
  const bool sent = absl::StartsWith(message, "Sent message larger than max");
  if (!sent && !absl::StartsWith(message, "Received message larger than max")) return std::nullopt;
  constexpr absl::string_view kBefore = " vs. ";
  const absl::string_view words = message;
  const size_t at = words.rfind(kBefore);
  int64_t limit = 0;
  if (at != absl::string_view::npos) {
    absl::string_view rest = words.substr(at + kBefore.size());
    rest = rest.substr(0, rest.find(')'));
    if (!absl::SimpleAtoi(rest, &limit) || limit < 0) limit = 0;
  }
  return GrpcSizeRefusal{sent, limit};
}

absl::Status WithClientLimit(absl::Status status, CallLimit limit) {
  status.SetPayload(kClientLimit, absl::Cord(CallLimitText(limit)));
  return status;
}

absl::Status OverOwnRequestLimit(absl::string_view words, int64_t limit) {
  return WithClientLimit(
      absl::ResourceExhaustedError(absl::StrCat(
          words, " (this client's own limit, ClientOptions::max_message_bytes, is ", limit,
          " bytes; nothing was sent: send fewer or smaller documents per call, or raise that "
          "option, up to cnp-server's --max-call-bytes)")),
      {CallLimit::Kind::kRequest, limit});
}

// The value of trailer `name`, if the server sent it.
std::optional<absl::string_view> Trailer(const grpc::ClientContext& context,
                                         absl::string_view name) {
  const std::multimap<grpc::string_ref, grpc::string_ref>& trailers =
      context.GetServerTrailingMetadata();
  auto found = trailers.find(grpc::string_ref(name.data(), name.size()));
  if (found == trailers.end()) return std::nullopt;
  return absl::string_view(found->second.data(), found->second.size());
}

}  // namespace

bool IsServerUnreachable(const absl::Status& status) {
  return absl::IsUnavailable(status) && status.GetPayload(kServerUnreachable).has_value();
}

std::optional<CallLimit> ClientLimitOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kClientLimit);
  if (!payload.has_value()) return std::nullopt;
  return ParseCallLimit(std::string(*payload));
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
               std::unique_ptr<TokenFile> token, const ClientOptions& options)
    : target_(std::move(target)), token_(std::move(token)),
      call_timeout_(options.call_timeout), max_message_bytes_(options.max_message_bytes),
      channel_(std::move(channel)), stub_(v1::Functions::NewStub(channel_)) {}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& target,
                                                        absl::Duration connect_timeout) {
  return Connect(target, ChannelSecurity{}, ClientOptions{.connect_timeout = connect_timeout});
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& target,
                                                        const ChannelSecurity& security,
                                                        absl::Duration connect_timeout,
                                                        RetryPolicy retry) {
  return Connect(target, security,
                 ClientOptions{.connect_timeout = connect_timeout, .retry = retry});
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& target,
                                                        const ChannelSecurity& security,
                                                        const ClientOptions& options) {
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ClientOptions::max_message_bytes must be positive, not ", options.max_message_bytes));
  }
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
  // The token is followed in its file from here on (token_file.h), for a client that outlives
  // a rotation.
  std::unique_ptr<TokenFile> token;
  if (!security.auth_token_file.empty()) {
    absl::StatusOr<std::unique_ptr<TokenFile>> opened = TokenFile::Open(security.auth_token_file);
    if (!opened.ok()) return opened.status();
    token = *std::move(opened);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  args.SetServiceConfigJSON(ClientServiceConfig(options.retry, NamesReplicas(target)));
  if (options.retry == RetryPolicy::kNone) args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  // gRPC keeps a call's request for a retry only up to this many bytes (default 256 KiB, past
  // which a call is no longer retried): every request this client may send stays retryable.
  args.SetInt(GRPC_ARG_PER_RPC_RETRY_BUFFER_SIZE, options.max_message_bytes);
  KeepLocalTargetOffProxies(target, args);
  auto channel = grpc::CreateCustomChannel(*uri, loaded->credentials, args);
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + options.connect_timeout))) {
    if (unix_socket && ClosesConnectionsAtOnce(path)) {
      // cnp-server closes a connection from a uid it does not allow before it says anything.
      return absl::PermissionDeniedError(absl::StrCat(
          "cnp-server at ", target, " accepts connections but closed this one at once: it "
          "does not allow this user (uid ", ::getuid(), "; see the server's --allow-uid) or is "
          "at its connection limit; its log says which"));
    }
    return absl::UnavailableError(
        security.UsesTls()
            ? absl::StrCat(ServerDownAdvice(target),
                           " (or the TLS handshake failed: check --tls-ca, and --tls-cert/"
                           "--tls-key if the server requires a client certificate; in the "
                           "client library ChannelSecurity::tls_ca_file, tls_cert_file and "
                           "tls_key_file)")
            : ServerDownAdvice(target));
  }
  return std::unique_ptr<Client>(
      new Client(target, std::move(channel), std::move(token), options));
}

void Client::PrepareContext(grpc::ClientContext& context,
                            std::optional<absl::Duration> timeout) const {
  const absl::Duration deadline_in = timeout.value_or(call_timeout_);
  if (deadline_in != absl::InfiniteDuration()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + deadline_in));
  }
  if (token_ != nullptr) context.AddMetadata("authorization", token_->Authorization());
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
  // gRPC refuses a message over a limit before any code of ours sees it, on either side, and
  // says so only in words: they are read here, the one place, into marks. "Sent" is this
  // client's own send limit (a call on stub(): the call methods check before sending).
  // "Received" is the receiving side's: this client's, for an answer over max_message_bytes (the
  // limit it names is ours); else cnp-server's --max-call-bytes, for the request. A server whose
  // limit equals ours cannot be the one refusing: we would not have sent the request.
  if (std::optional<GrpcSizeRefusal> refusal = GrpcSizeRefusalOf(status)) {
    if (refusal->sent) return OverOwnRequestLimit(status.error_message(), max_message_bytes_);
    if (refusal->limit == max_message_bytes_) {
      return WithClientLimit(
          absl::ResourceExhaustedError(absl::StrCat(
              status.error_message(), " (this client's own limit: cnp-server's answer is larger "
              "than the ", max_message_bytes_, " bytes this client takes, "
              "ClientOptions::max_message_bytes; ask for less per call - fewer documents or "
              "keys - or raise that option)")),
          {CallLimit::Kind::kAnswer, max_message_bytes_});
    }
    return WithCallLimit(
        absl::ResourceExhaustedError(absl::StrCat(
            status.error_message(), " (the request is over cnp-server's --max-call-bytes: send "
            "fewer or smaller documents per call, or raise that flag)")),
        {CallLimit::Kind::kRequest, refusal->limit});
  }
  // An HTTP/2 server that answers with an HTTP status instead of gRPC's, which gRPC quotes and
  // nothing more: a 404 from a web server, or a proxy with no route for cnp.v1; a 502, 503 or
  // 504 from a proxy whose cnp-server is down or out of its reach.
  constexpr std::string_view kHttpStatus = "Received http2 header with status: ";
  if (const size_t at = status.error_message().find(kHttpStatus); at != std::string::npos) {
    const std::string_view http =
        std::string_view(status.error_message()).substr(at + kHttpStatus.size(), 3);
    std::string hint;
    if (http == "404") {
      hint = absl::StrCat("what answers at ", target_, " is an HTTP/2 server but not a "
                          "cnp-server, or a proxy that does not route cnp.v1 calls to one");
    } else if (http == "502" || http == "503" || http == "504") {
      hint = absl::StrCat("a proxy at ", target_, " answered ", std::string(http),
                          ": the cnp-server behind it is down, or out of its reach");
    }
    if (!hint.empty()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          absl::StrCat(status.error_message(), " (", hint, ")"));
    }
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

void Client::ResetConnectionBackoff() const {
  grpc::experimental::ChannelResetConnectionBackoff(channel_.get());
}

absl::Status Client::FromGrpc(const grpc::Status& status,
                              const grpc::ClientContext& context) const {
  if (status.ok()) return absl::OkStatus();
  // The server's own marks, in its trailers, come first: what it says of a refusal is its limit,
  // whatever the words.
  absl::Status converted;
  std::optional<CallLimit> server_limit;
  if (std::optional<absl::string_view> text = Trailer(context, kCallLimitTrailer)) {
    // A value this client does not read (a newer server's kind) is no mark it can act on.
    server_limit = ParseCallLimit(*text);
  }
  if (server_limit.has_value()) {
    converted = WithCallLimit(
        absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message()),
        *server_limit);
  } else {
    converted = FromGrpc(status);
  }
  // Any negative pushback is gRPC's "do not retry"; cnp-server sends -1 for a request that
  // crashed a worker. (A call already retried by this client's policy carries it too.)
  if (std::optional<absl::string_view> pushback = Trailer(context, kRetryPushbackTrailer)) {
    if (absl::StartsWith(*pushback, "-")) converted = NotRetryable(std::move(converted));
  }
  return converted;
}

template <typename Request, typename Response>
absl::StatusOr<Response> Client::Call(
    grpc::Status (v1::Functions::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
    const Request& request, std::optional<absl::Duration> timeout) const {
  // gRPC would refuse it too, in words FromGrpc must then read; here it is known for certain.
  if (const size_t bytes = request.ByteSizeLong();
      bytes > static_cast<size_t>(max_message_bytes_)) {
    return OverOwnRequestLimit(
        absl::StrCat("the request is ", bytes, " bytes, more than this client sends"),
        max_message_bytes_);
  }
  grpc::ClientContext context;
  PrepareContext(context, timeout);
  Response response;
  absl::Status s = FromGrpc((stub_.get()->*method)(&context, request, &response), context);
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<v1::MapResponse> Client::Map(const std::vector<std::string>& functions,
                                            const std::vector<std::string>& docs,
                                            std::optional<absl::Duration> timeout) const {
  v1::MapRequest request;
  for (const std::string& f : functions) request.add_functions(f);
  for (const std::string& d : docs) request.add_docs(d);
  absl::StatusOr<v1::MapResponse> response = Call(&v1::Functions::Stub::Map, request, timeout);
  // Callers pair results(i) with docs[i]: an answer of another length (a server of another
  // version, a broken proxy) is refused here rather than read past either end.
  if (response.ok() && static_cast<size_t>(response->results_size()) != docs.size()) {
    return absl::InternalError(absl::StrCat("cnp-server answered a Map of ", docs.size(),
                                            " documents with ", response->results_size(),
                                            " results"));
  }
  return response;
}

absl::StatusOr<v1::ReduceResponse> Client::Reduce(const std::vector<std::string>& functions,
                                                  const std::string& kvs, bool rereduce,
                                                  std::optional<absl::Duration> timeout) const {
  v1::ReduceRequest request;
  for (const std::string& f : functions) request.add_functions(f);
  request.set_kvs(kvs);
  request.set_rereduce(rereduce);
  absl::StatusOr<v1::ReduceResponse> response =
      Call(&v1::Functions::Stub::Reduce, request, timeout);
  // As for Map: callers pair results(i) with functions[i].
  if (response.ok() && static_cast<size_t>(response->results_size()) != functions.size()) {
    return absl::InternalError(absl::StrCat("cnp-server answered a Reduce of ", functions.size(),
                                            " functions with ", response->results_size(),
                                            " results"));
  }
  return response;
}

absl::StatusOr<v1::ValidateResponse> Client::Validate(
    const v1::ValidateRequest& request, std::optional<absl::Duration> timeout) const {
  return Call(&v1::Functions::Stub::Validate, request, timeout);
}

absl::StatusOr<v1::DesignFunctionResponse> Client::CallDesignFunction(
    const v1::DesignFunctionRequest& request, std::optional<absl::Duration> timeout) const {
  return Call(&v1::Functions::Stub::CallDesignFunction, request, timeout);
}

absl::StatusOr<v1::ResolveResponse> Client::Resolve(const std::vector<std::string>& functions,
                                                    std::optional<absl::Duration> timeout) const {
  v1::ResolveRequest request;
  for (const std::string& f : functions) request.add_functions(f);
  return Call(&v1::Functions::Stub::Resolve, request, timeout);
}

}  // namespace cnp::client
