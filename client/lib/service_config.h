// The gRPC service config every client channel carries: how it spreads calls over the
// addresses its target resolves to, and which calls gRPC itself retries when a server goes away.
//
// Balancing: round_robin over every address (channel_target.h), so a list or a dns:/// name of
// several replicas spreads calls over all of them and stops picking one that is down. With one
// address it behaves as gRPC's default.
//
// Health: with `watch_health` (a target of several replicas, channel_target.h's NamesReplicas)
// the channel watches each replica's health service (healthCheckConfig), and round robin picks
// only replicas that report SERVING: one that is draining (SIGTERM, cnp-server's --drain-delay)
// gets no new calls from the moment it says NOT_SERVING, and its calls in flight end before it
// stops. A server without the health service counts as serving. A target of one server does
// not watch: while its one server drains, the calls still go to it and are served.
//
// Retries: the calls that are pure functions of their request - Map, MapStream, Reduce,
// Validate, CallDesignFunction, Resolve - are retried by gRPC on UNAVAILABLE (a replica that
// died, was killed or shut down while the call ran, or a balancer such as nginx whose upstream
// died: HTTP 502) and on CANCELLED from the server (a call that reached a replica as it began
// to shut down: gRPC cancels those; a call the client cancels itself is never retried), up to kMaxAttempts attempts with jittered backoff, each attempt picked
// afresh (so on another replica). Upload writes to CouchDB and Session holds state the adapter
// replays itself: neither is retried here. gRPC retries a call only until the server has sent
// response headers, so a MapStream whose first answer arrived is not retried (the caller must
// resend what was unanswered); the unary calls always can be.
#pragma once

#include <string>

namespace cnp::client {

enum class RetryPolicy {
  kIdempotentCalls,  // the calls listed above are retried on UNAVAILABLE
  kNone,             // no call is retried (the adapter, which replays sessions itself)
};

// gRPC 1.51 caps maxAttempts at 5. Three is enough to move off a dead replica twice (the first
// retry may still be routed to it while the balancer notices). A worker crash is UNAVAILABLE
// too, but the server answers it with "grpc-retry-pushback-ms: -1" (common/retry_advice.h),
// which gRPC obeys: a request that crashes workers is not sent again. With kNone the client
// library marks such a status instead (IsNotRetryable), for the caller's own retries. The JSON
// is printed in README.md ("Calling it over gRPC") for clients in other languages.
inline constexpr int kMaxAttempts = 3;

// The service config JSON (grpc::ChannelArguments::SetServiceConfigJSON).
std::string ClientServiceConfig(RetryPolicy retry, bool watch_health = false);

}  // namespace cnp::client
