// A small C++ client for cnp-server, for other services and for the cnp command line.
//
//   auto client = cnp::client::Client::Connect("unix:/tmp/cnp-1000/cnp.sock");
//   auto rows = (*client)->Map({"myviews.townmap|123"}, {R"({"_id":"a","town":"Oslo"})"});
//
// Bazel targets for a service outside this repository: //client/lib:cnp_client (this header,
// channel_security.h, service_config.h), //common:call_limit (CallLimitOf),
// //common:retry_advice (IsNotRetryable) and //proto:functions_cc (the messages).
//
// Every call has a deadline: the call methods' `timeout`, else ClientOptions::call_timeout (60 s
// by default), and so has a call made on stub() whose context PrepareContext prepared. Errors are
// absl::Status values carrying the server's code and a message that says what to do (an
// unreachable server names its address and how to start one), and marks a program can test
// without reading the message: IsServerUnreachable, CallLimitOf (the server refused the call
// for its size), ClientLimitOf (this client's own size limit did), IsNotRetryable (the request
// crashed a worker: sending it again, anywhere, crashes another).
//
// The target may name several replicas (channel_target.h: "10.0.0.5:7070,10.0.0.6:7070",
// "dns:///cnp.internal:7070"): calls are spread over them round robin, and the idempotent
// calls (all but Upload and Session) are retried by gRPC on another replica when one goes away
// mid-call (service_config.h).
//
// Threads: one Client may be shared by any number of threads, and should be (it holds the
// connections): every const method may be called from several threads at once, and so may the
// stub's methods (gRPC's channel and stub are thread-safe). What is not shared: a
// grpc::ClientContext belongs to one call and must not be reused for another; a stream (Session,
// MapStream, Upload) may have one thread reading and one writing at a time, no more; and the
// Client must outlive every call in flight on it (destroy it only once they have returned).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/lib/channel_security.h"
#include "client/lib/service_config.h"
#include "client/lib/token_file.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "common/call_limit.h"
#include "common/retry_advice.h"

namespace cnp::client {

// What Connect may be told besides the target and the channel's security.
struct ClientOptions {
  // How long Connect waits for the server (with several replicas, any one) to answer.
  absl::Duration connect_timeout = absl::Seconds(5);
  // kNone turns gRPC's retries off (for callers that retry themselves: IsNotRetryable and
  // IsServerUnreachable tell them which failures are worth it).
  RetryPolicy retry = RetryPolicy::kIdempotentCalls;
  // The deadline of a call that names none: the call methods' and PrepareContext's default.
  // absl::InfiniteDuration() means none.
  absl::Duration call_timeout = absl::Seconds(60);
  // The largest request this client sends and the largest answer it takes, in bytes (past it a
  // call fails RESOURCE_EXHAUSTED on this side, marked ClientLimitOf). cnp-server's own limit is
  // its --max-call-bytes (64 MiB + 64 KiB by default, at most 1 GiB - 1 MiB): raise this only
  // for a server whose limit is higher.
  int max_message_bytes = 256 << 20;
};

class Client {
 public:
  // Connects, waiting up to `connect_timeout` for the server (with several, any one) to answer.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      const std::string& target, absl::Duration connect_timeout = absl::Seconds(5));
  // The same with TLS and/or a bearer token (channel_security.h). A unix socket is refused
  // before connecting unless its directory and the socket belong to this user, root or
  // `security.server_user`, and the directory is writable by no one else
  // (common/socket_trust.h); a token is refused for a plaintext TCP target off this host.
  // Before sending CouchDB credentials (Upload, on stub()), check them with
  // CheckSecretStaysPrivate (channel_security.h).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& target,
                                                         const ChannelSecurity& security,
                                                         const ClientOptions& options);
  // The same as ClientOptions{.connect_timeout = connect_timeout, .retry = retry}.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      const std::string& target, const ChannelSecurity& security,
      absl::Duration connect_timeout = absl::Seconds(5),
      RetryPolicy retry = RetryPolicy::kIdempotentCalls);

  // The calls. `timeout` unset: ClientOptions::call_timeout. A request larger than
  // ClientOptions::max_message_bytes is refused here, before anything is sent (ClientLimitOf).
  absl::StatusOr<v1::MapResponse> Map(const std::vector<std::string>& functions,
                                      const std::vector<std::string>& docs,
                                      std::optional<absl::Duration> timeout = std::nullopt) const;
  // reduce: `kvs` is a JSON array of [[key, doc_id], value]; rereduce: a JSON array of values.
  absl::StatusOr<v1::ReduceResponse> Reduce(
      const std::vector<std::string>& functions, const std::string& kvs, bool rereduce,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  absl::StatusOr<v1::ValidateResponse> Validate(
      const v1::ValidateRequest& request,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  absl::StatusOr<v1::DesignFunctionResponse> CallDesignFunction(
      const v1::DesignFunctionRequest& request,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  absl::StatusOr<v1::ResolveResponse> Resolve(
      const std::vector<std::string>& functions,
      std::optional<absl::Duration> timeout = std::nullopt) const;

  // The generated stub, for the calls above in their raw form and for the streams (MapStream,
  // Upload, Session). Prepare each call's context with PrepareContext (the token, a deadline)
  // and turn its status into an absl::Status with FromGrpc(status, context).
  v1::Functions::Stub& stub() const { return *stub_; }
  // Prepares a context for a call on stub(): the bearer token, if any, and the deadline:
  // `timeout` from now, ClientOptions::call_timeout when unset, none when
  // absl::InfiniteDuration() (an Upload that builds indexes may take hours).
  void PrepareContext(grpc::ClientContext& context,
                      std::optional<absl::Duration> timeout = std::nullopt) const;
  const std::string& target() const { return target_; }

  // A failed RPC as an absl::Status, with advice when the server cannot be reached, and the
  // marks above. Give the call's `context` whenever there is one: the server's marks travel in
  // its trailers (cnp-call-limit, grpc-retry-pushback-ms), which only the context holds.
  absl::Status FromGrpc(const grpc::Status& status) const;
  absl::Status FromGrpc(const grpc::Status& status, const grpc::ClientContext& context) const;

  // Makes the channel try to connect at once instead of after gRPC's reconnection backoff,
  // which grows to minutes while a server is down: for a caller that waits out a restart.
  void ResetConnectionBackoff() const;

 private:
  Client(std::string target, std::shared_ptr<grpc::Channel> channel,
         std::unique_ptr<TokenFile> token, const ClientOptions& options);

  template <typename Request, typename Response>
  absl::StatusOr<Response> Call(
      grpc::Status (v1::Functions::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
      const Request& request, std::optional<absl::Duration> timeout) const;

  const std::string target_;
  const std::unique_ptr<TokenFile> token_;  // null without a token
  const absl::Duration call_timeout_;
  const int64_t max_message_bytes_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::Functions::Stub> stub_;
};

// The advice printed when nothing answers at `target`.
std::string ServerDownAdvice(const std::string& target);

// Whether a call failed because no cnp-server answered (UNAVAILABLE with the channel not
// connected: the server is down or restarting), as opposed to an error a server answered, a
// worker crashing on the request among them (IsNotRetryable, common/retry_advice.h). Kept by a
// status that copies the payloads.
bool IsServerUnreachable(const absl::Status& status);

// The limit of this client's own that refused a call (ClientOptions::max_message_bytes), as
// opposed to one of the server's (CallLimitOf, which is then nullopt): kRequest, the request
// was larger and was not sent; kAnswer, the server's answer was larger. Either way, smaller
// calls or a larger max_message_bytes help; the server's flags do not.
std::optional<CallLimit> ClientLimitOf(const absl::Status& status);

}  // namespace cnp::client
