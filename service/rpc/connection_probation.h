// TCP connections that must make an authorised call soon after they connect, or be closed
// (--first-call-timeout). A peer that connects and then sends nothing, only the HTTP/2
// preface, calls without the token, or a header block that never ends (gRPC 1.51 keeps
// parsing it, README "Security") holds a descriptor and gRPC's memory for nothing; gRPC's own
// idle limit (--max-connection-idle) is meant for clients that have been served and is far
// too long for these.
//
// The connection acceptor puts each TCP connection it hands to gRPC on probation; CallGate
// ends the probation at the connection's first call it admits (the token checked, when there
// is one). The acceptor closes the connections whose time is up. It keeps a duplicate of each
// connection's descriptor while it is on probation, so that what it shuts down is that very
// socket even if gRPC has closed its own descriptor meanwhile and the number now names
// something else.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/server_context.h"

namespace cnp::rpc {

class ConnectionProbation {
 public:
  using Clock = std::chrono::steady_clock;

  // `timeout` zero: no probation (Watch does nothing).
  explicit ConnectionProbation(Clock::duration timeout) : timeout_(timeout) {}
  ~ConnectionProbation();  // EndAll()
  ConnectionProbation(const ConnectionProbation&) = delete;
  ConnectionProbation& operator=(const ConnectionProbation&) = delete;

  Clock::duration timeout() const { return timeout_; }

  // Puts connection `fd` from `peer` (gRPC's form, "ipv4:127.0.0.1:5000") on probation.
  // Returns the duplicate descriptor it holds (-1 when there is no probation, or dup failed:
  // then errno says why).
  int Watch(const std::string& peer, int fd);
  // A call from `context`'s connection was admitted: its probation, if any, is over. Called
  // on every call, so it costs one atomic load while no connection is on probation.
  void Admitted(const grpc::ServerContext& context);
  // Ends `peer`'s probation without closing the connection.
  void Release(const std::string& peer);
  // Shuts down the connections whose time is up and returns their peers.
  std::vector<std::string> CloseExpired();
  // Lets go of every connection on probation without closing it (the server is stopping).
  void EndAll();

 private:
  struct Watched {
    int duplicate;
    Clock::time_point deadline;
  };

  const Clock::duration timeout_;
  std::atomic<int> watched_count_{0};
  absl::Mutex mu_;
  std::unordered_map<std::string, Watched> watched_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cnp::rpc
