// The Session RPC's per-stream handler, the glue between the transport (service/rpc) and
// CouchDB's protocol (service/couchdb, which knows nothing of gRPC): one AsyncQuerySession per
// stream, each SessionInput line awaited by the stream's coroutine (cancelled with the stream).
// "reset" is answered by nothing (the adapter has already written `true`); an output marked
// `exit` ends the stream after it is written.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

#include "asio/awaitable.hpp"
#include "service/couchdb/async_query_session.h"
#include "service/couchdb/design_doc_budget.h"
#include "service/metrics/service_metrics.h"
#include "service/pool/async_task_runner.h"
#include "service/rpc/rpc_server.h"

namespace cnp::rpc {

class QuerySessionHandler final : public SessionHandler {
 public:
  // `design_budget`, if any, is what every stream's design documents are charged to; the
  // handler keeps it alive as long as its session gives bytes back to it.
  QuerySessionHandler(pool::AsyncTaskRunner& runner, couchdb::AsyncQuerySession::Options options,
                      std::shared_ptr<couchdb::DesignDocBudget> design_budget = nullptr)
      : design_budget_(std::move(design_budget)),
        session_(runner, WithBudget(options, design_budget_.get())) {}

  asio::awaitable<absl::StatusOr<std::optional<v1::SessionOutput>>> Handle(
      v1::SessionInput& input) override {
    // The line is the session's to take from: a large document is moved to its worker's task.
    std::optional<v1::SessionOutput> output =
        co_await session_.Handle(input.line(), input.mutable_line());
    // The server is stopping and cut the command's work (--shutdown-grace): the stream ends
    // UNAVAILABLE with no answer, so the adapter replays the session and the command on
    // another stream (another replica, or the server that replaces this one), as when a stream
    // breaks, instead of handing CouchDB an `unavailable` the command did not earn. A worker
    // that crashed on the command is still answered (NotRetryable: it would crash the next).
    if (!session_.cut_by_shutdown().ok()) co_return session_.cut_by_shutdown();
    co_return output;
  }
  bool EndsStream(const v1::SessionOutput& output) override { return output.exit(); }
  // A list between its rows: CouchDB sends the rest at once, and a stream ended here would
  // fail the list (its steps cannot be replayed elsewhere), so a server stopping lets it end.
  bool HoldsCommandOpen() const override { return session_.list_in_progress(); }
  // A function's log() lines go to CouchDB as they are made, and restart the command's
  // deadline as each restarts CouchDB's timeout.
  void WriteEarlyWith(EarlyWriter writer) override { session_.WriteLogsEarly(std::move(writer)); }
  // An open list is given the end of its rows, so its worker goes back to the pool ready.
  asio::awaitable<void> Close() override { co_await session_.Close(); }

 private:
  static couchdb::AsyncQuerySession::Options WithBudget(
      couchdb::AsyncQuerySession::Options options, couchdb::DesignDocBudget* budget) {
    options.design_docs.shared = budget;
    return options;
  }

  const std::shared_ptr<couchdb::DesignDocBudget> design_budget_;  // outlives session_
  couchdb::AsyncQuerySession session_;
  metrics::ActiveSession active_{"stream"};
};

// The factory RpcServer calls for each new Session stream. `call_timeout` (--call-timeout)
// bounds every command whatever CouchDB's reset says, and ends a list left waiting that long;
// `max_answer_bytes` (--max-call-bytes) bounds what a worker may answer to one (0: no bound);
// `design_memory` (--max-session-design-memory) bounds the design documents all the streams
// hold together (0: no shared bound). `started_by_adapter`: the server was started by
// cnp-adapter, whose --call-timeout is then the setting a timeout's message names.
inline SessionFactory QuerySessionFactory(pool::AsyncTaskRunner& runner,
                                          absl::Duration call_timeout,
                                          int64_t max_answer_bytes = 0,
                                          int64_t design_memory = 0,
                                          bool started_by_adapter = false) {
  couchdb::AsyncQuerySession::Options options;
  options.max_call_timeout = call_timeout;
  options.call_timeout_setting = std::string(couchdb::CallTimeoutSetting(started_by_adapter));
  options.max_answer_bytes = max_answer_bytes;
  std::shared_ptr<couchdb::DesignDocBudget> budget;
  if (design_memory > 0) {
    budget = std::make_shared<couchdb::DesignDocBudget>(static_cast<size_t>(design_memory));
  }
  return [&runner, options, budget] {
    return std::make_unique<QuerySessionHandler>(runner, options, budget);
  };
}

}  // namespace cnp::rpc
