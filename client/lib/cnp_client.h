// A small C++ client for cnp-server, for other services and for the cnp command line.
//
//   auto client = cnp::client::Client::Connect("unix:/tmp/cnp-1000/cnp.sock");
//   auto rows = (*client)->Map({"myviews.townmap|123"}, {R"({"_id":"a","town":"Oslo"})"});
//
// Every call takes a timeout; errors are absl::Status values carrying the server's code and a
// message that says what to do (an unreachable server names its address and how to start one).
//
// The target may name several replicas (channel_target.h: "10.0.0.5:7070,10.0.0.6:7070",
// "dns:///cnp.internal:7070"): calls are spread over them round robin, and the idempotent
// calls (all but Upload and Session) are retried by gRPC on another replica when one goes away
// mid-call (service_config.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/lib/channel_security.h"
#include "client/lib/service_config.h"
#include "cnp/v1/functions.grpc.pb.h"

namespace cnp::client {

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
  // CheckSecretStaysPrivate (channel_security.h). `retry` kNone turns
  // gRPC's retries off (for callers that retry themselves, and to show what the policy does).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      const std::string& target, const ChannelSecurity& security,
      absl::Duration connect_timeout = absl::Seconds(5),
      RetryPolicy retry = RetryPolicy::kIdempotentCalls);

  absl::StatusOr<v1::MapResponse> Map(const std::vector<std::string>& functions,
                                      const std::vector<std::string>& docs,
                                      absl::Duration timeout = absl::Seconds(60));
  // reduce: `kvs` is a JSON array of [[key, doc_id], value]; rereduce: a JSON array of values.
  absl::StatusOr<v1::ReduceResponse> Reduce(const std::vector<std::string>& functions,
                                            const std::string& kvs, bool rereduce,
                                            absl::Duration timeout = absl::Seconds(60));
  absl::StatusOr<v1::ValidateResponse> Validate(const v1::ValidateRequest& request,
                                                absl::Duration timeout = absl::Seconds(60));
  absl::StatusOr<v1::DesignFunctionResponse> CallDesignFunction(
      const v1::DesignFunctionRequest& request, absl::Duration timeout = absl::Seconds(60));
  absl::StatusOr<v1::ResolveResponse> Resolve(const std::vector<std::string>& functions,
                                              absl::Duration timeout = absl::Seconds(60));

  v1::Functions::Stub& stub() { return *stub_; }
  // Prepares a context for a call on stub(): the deadline (none when infinite) and the bearer
  // token, if any.
  void PrepareContext(grpc::ClientContext& context,
                      absl::Duration timeout = absl::InfiniteDuration()) const;
  const std::string& target() const { return target_; }

  // A failed RPC as an absl::Status, with advice when the server cannot be reached. With the
  // call's `context`, a refusal for the call's size carries its limit (common/call_limit.h:
  // CallLimitOf), read from the server's trailer.
  absl::Status FromGrpc(const grpc::Status& status) const;
  absl::Status FromGrpc(const grpc::Status& status, const grpc::ClientContext& context) const;

  // Makes the channel try to connect at once instead of after gRPC's reconnection backoff,
  // which grows to minutes while a server is down: for a caller that waits out a restart.
  void ResetConnectionBackoff();

 private:
  Client(std::string target, std::shared_ptr<grpc::Channel> channel, std::string authorization);

  std::string target_;
  std::string authorization_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Functions::Stub> stub_;
};

// The advice printed when nothing answers at `target`.
std::string ServerDownAdvice(const std::string& target);

// Whether a call failed because no cnp-server answered (UNAVAILABLE with the channel not
// connected: the server is down or restarting), as opposed to an error a server answered, a
// worker crashing on the request among them. Kept by a status that copies the payloads.
bool IsServerUnreachable(const absl::Status& status);

}  // namespace cnp::client
