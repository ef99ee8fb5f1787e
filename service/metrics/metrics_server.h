// Serves GET /metrics (the Prometheus text format) on --metrics-listen, with libmicrohttpd on a
// thread of its own, so that a scrape never waits for calls and calls never wait for a scrape.
// Like the gRPC listener it refuses an address other than loopback unless told otherwise
// (--metrics-public, or --insecure): the metrics name functions and document counts.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "service/metrics/connection_deadline.h"

struct MHD_Daemon;

namespace cnp::metrics {

class MetricsServer {
 public:
  MetricsServer() = default;
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  ~MetricsServer() { Stop(); }

  // Binds `address` ("host:port"; port 0 picks one) and starts serving; an address that is not
  // loopback (a name may resolve to one) only if `public_allowed`.
  absl::Status Start(const std::string& address, bool public_allowed);
  void Stop();
  // The bound port (useful with port 0).
  int port() const { return port_; }

 private:
  std::unique_ptr<ConnectionDeadline> deadline_;  // every daemon's connections; outlives them
  std::vector<MHD_Daemon*> daemons_;  // one per bound address (localhost: 127.0.0.1 and ::1)
  int port_ = 0;
};

}  // namespace cnp::metrics
