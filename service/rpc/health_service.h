// gRPC's health service (grpc.health.v1.Health: Check and Watch), served on the server's own
// completion queues like every other call.
//
// gRPC's default health service is written on its callback API, which under the `poll`
// strategy cnp-server uses gets a completion queue of its own with two threads of its own
// ("nexting_thread"). Those threads then poll every connection too, and what they read of a
// call is handed over to the thread of the call's own queue: with 16 Validate callers over TCP
// that was 0.4-0.9 more context switches and 21-26 µs more server CPU per call, for a service
// asked a few times a minute (tests/bench/load_client; README, "The server's runtime").
//
// The overall status ("") and each service the server exports of its own are answered alike: a
// probe that names the service (Kubernetes' gRPC probe with `service:`) is told what the server
// as a whole is. Any other name is NOT_FOUND to Check and SERVICE_UNKNOWN to Watch, as gRPC's
// health-checking protocol has it. A Watch is told the status as it is after every change
// (changes that come faster than it is written are merged, as the protocol allows); it is
// ended (status UNAVAILABLE) when the server shuts down, like the other streams (ShutdownGate).
//
// Watch answers without the token (load balancers use it) and an open one keeps its connection
// from being closed as idle, so how many there may be is bounded: a few per connection (a
// balancer needs one or two) and a few hundred in all; past either a new Watch is refused
// UNIMPLEMENTED, which a client checking health takes for "serving, stop watching" (UNAVAILABLE,
// "not serving", once the server drains), and Check still answers. Before, each connection
// could hold 100 (its stream limit) for good, some 16 KB each: 100 connections took a server
// from 24 to 189 MB.
// A unix socket's peers are counted in all only: gRPC names them all alike ("unix:"), and
// only allowed users reach them.
#pragma once

#include <memory>
#include <optional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "asio/awaitable.hpp"
#include "grpc/health/v1/health.grpc.pb.h"
#include "service/grpc_asio/grpc_context.h"
#include "service/rpc/call_executor.h"
#include "service/rpc/shutdown_gate.h"

namespace cnp::rpc {

// How many Watch streams may be open at once.
struct WatchLimits {
  int per_connection = 4;
  int total = 256;  // some 4 MB
};

class HealthService {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // `services`: the full names of the services the server exports (besides "", the server).
  // NOT_SERVING until SetServing(true).
  explicit HealthService(std::vector<std::string> services, WatchLimits limits = {});
  HealthService(const HealthService&) = delete;
  HealthService& operator=(const HealthService&) = delete;

  // To register with the server's builder.
  grpc::Service* service() { return &service_; }

  // Serves Check and Watch on `context`'s queue until the server shuts down. Watch streams
  // register with `gate`, which ends them at shutdown.
  void Listen(grpc_asio::GrpcContext& context, ShutdownGate& gate,
              CallLogScope::PeerOf peer_of);

  // What every name the server knows reports from now on; watchers are told at once. Any
  // thread. Once Freeze() has been called, the status stays NOT_SERVING.
  void SetServing(bool serving);
  // NOT_SERVING for good: the server is going away.
  void Freeze();

  // What Check answers for `service`; nullopt for a name the server does not know.
  std::optional<ServingStatus> StatusOf(const std::string& service) const;

 private:
  class WatchCall;
  void AwaitNextWatch(grpc_asio::GrpcContext& context, ShutdownGate& gate,
                      CallLogScope::PeerOf peer_of);
  void ChangeLocked(bool serving) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts a Watch of `peer` in, or refuses it. Ended with EndWatch(peer).
  std::optional<grpc::Status> AdmitWatch(const std::string& peer) ABSL_LOCKS_EXCLUDED(mu_);
  void EndWatch(const std::string& peer) ABSL_LOCKS_EXCLUDED(mu_);
  static asio::awaitable<void> ServeWatch(HealthService* self, ShutdownGate* gate,
                                          CallLogScope::PeerOf peer_of,
                                          std::shared_ptr<WatchCall> call);

  // Both methods take their requests as bytes: they are walked against HealthCheckRequest
  // before anything is parsed (request_parsing.h), as every other request is. Health calls need
  // no token, and gRPC's own parse of 60 MB of unknown fields took the server to 594 MB.
  using RawHealth = grpc::health::v1::Health::WithRawMethod_Check<
      grpc::health::v1::Health::WithRawMethod_Watch<grpc::health::v1::Health::AsyncService>>;
  RawHealth service_;
  const std::vector<std::string> services_;
  const WatchLimits limits_;
  mutable absl::Mutex mu_;
  int open_watches_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int> watches_per_peer_ ABSL_GUARDED_BY(mu_);  // TCP peers with one open
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool frozen_ ABSL_GUARDED_BY(mu_) = false;
  // Registered while they stream (so alive), each told of a change on its own context.
  std::set<WatchCall*> watches_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cnp::rpc
