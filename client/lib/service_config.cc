#include "client/lib/service_config.h"

#include "absl/strings/str_cat.h"

namespace cnp::client {

std::string ClientServiceConfig(RetryPolicy retry, bool watch_health) {
  std::string config = R"({"loadBalancingConfig":[{"round_robin":{}}])";
  // "": the server's overall health, which cnp-server's drain turns to NOT_SERVING.
  if (watch_health) config += R"(,"healthCheckConfig":{"serviceName":""})";
  if (retry == RetryPolicy::kIdempotentCalls) {
    // CANCELLED too: the client did not cancel (a call it cancels is never retried), so the
    // server did, which cnp-server does for one reason only: gRPC cancels a call that reached
    // it after its shutdown began (behind nginx, which learns of the shutdown only then).
    // Backoff: the first retry waits up to 50 ms (gRPC draws the wait at random below the
    // bound), enough for a balancer to see the replica gone; later ones up to 0.1 s, 0.2 s...
    absl::StrAppend(
        &config, R"(,"methodConfig":[{"name":[)",
        R"({"service":"cnp.v1.Functions","method":"Map"},)",
        R"({"service":"cnp.v1.Functions","method":"MapStream"},)",
        R"({"service":"cnp.v1.Functions","method":"Reduce"},)",
        R"({"service":"cnp.v1.Functions","method":"Validate"},)",
        R"({"service":"cnp.v1.Functions","method":"CallDesignFunction"},)",
        R"({"service":"cnp.v1.Functions","method":"Resolve"}],)",
        R"("retryPolicy":{"maxAttempts":)", kMaxAttempts,
        R"(,"initialBackoff":"0.05s","maxBackoff":"1s","backoffMultiplier":2,)",
        R"("retryableStatusCodes":["UNAVAILABLE","CANCELLED"]}}])");
  }
  config += "}";
  return config;
}

}  // namespace cnp::client
