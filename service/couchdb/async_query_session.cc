#include "service/couchdb/async_query_session.h"

#include <utility>
#include <variant>

namespace cnp::couchdb {

asio::awaitable<std::optional<v1::SessionOutput>> AsyncQuerySession::Handle(
    std::string_view line) {
  // Not awaited inside the if's condition: g++ 12's coroutine crashed there.
  const bool answered = co_await Drive(protocol_.Handle(line));
  if (!answered) co_return std::nullopt;
  co_return std::move(protocol_.output());
}

asio::awaitable<void> AsyncQuerySession::Close() { co_await Drive(protocol_.Close()); }

asio::awaitable<bool> AsyncQuerySession::Drive(QueryProtocol::Step step) {
  while (const auto* run = std::get_if<QueryProtocol::RunTask>(&step)) {
    const absl::StatusOr<worker::v1::Reply> reply = co_await Run(*run);
    step = protocol_.Resume(reply);
  }
  if (!protocol_.list_in_progress()) lease_.reset();
  co_return std::get<QueryProtocol::Answer>(step).output;
}

asio::awaitable<absl::StatusOr<worker::v1::Reply>> AsyncQuerySession::Run(
    QueryProtocol::RunTask run) {
  // The runner takes its task by value: a copy of the protocol's (a map_doc's document too).
  switch (run.on) {
    case QueryProtocol::On::kAnyWorker:
      co_return co_await runner_.Run(*run.task, run.deadline);
    case QueryProtocol::On::kNewLease: {
      absl::StatusOr<std::unique_ptr<pool::AsyncWorkerLease>> lease =
          co_await runner_.Lease(run.deadline);
      if (!lease.ok()) co_return lease.status();
      lease_ = *std::move(lease);
      break;
    }
    case QueryProtocol::On::kLease:
      break;
  }
  co_return co_await lease_->Exchange(*run.task, run.deadline);
}

}  // namespace cnp::couchdb
