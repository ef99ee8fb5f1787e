// The Session RPC's per-stream handler, the glue between the transport (service/rpc) and
// CouchDB's protocol (service/couchdb, which knows nothing of gRPC): one QuerySession per
// stream, each SessionInput line answered on the server's threads for blocking work. "reset"
// is answered by nothing (the adapter has already written `true`); an output marked `exit`
// ends the stream after it is written.
#pragma once

#include <functional>
#include <memory>

#include "service/couchdb/query_session.h"
#include "service/metrics/service_metrics.h"
#include "service/pool/task_runner.h"
#include "service/rpc/rpc_server.h"

namespace cnp::rpc {

class QuerySessionHandler final : public BlockingSessionHandler {
 public:
  explicit QuerySessionHandler(pool::TaskRunner& runner) : session_(runner) {}

  absl::StatusOr<std::optional<v1::SessionOutput>> Handle(v1::SessionInput& input) override {
    return session_.Handle(input.line());
  }
  bool EndsStream(const v1::SessionOutput& output) override { return output.exit(); }

 private:
  couchdb::QuerySession session_;
  metrics::ActiveSession active_{"stream"};
};

// The factory RpcServer calls for each new Session stream.
inline SessionFactory QuerySessionFactory(pool::TaskRunner& runner) {
  return [&runner] { return std::make_unique<QuerySessionHandler>(runner); };
}

}  // namespace cnp::rpc
