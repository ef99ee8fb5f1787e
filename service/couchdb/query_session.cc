#include "service/couchdb/query_session.h"

#include <utility>
#include <variant>

#include "service/common/function_errors.h"

namespace cnp::couchdb {

QuerySession::QuerySession(pool::TaskRunner& runner, Options options,
                           FunctionErrors function_errors)
    : runner_(runner), function_errors_(std::move(function_errors)), protocol_(options) {}

QuerySession::~QuerySession() { Drive(protocol_.Close()); }

std::optional<v1::SessionOutput> QuerySession::Handle(std::string_view line) {
  if (!Drive(protocol_.Handle(line))) return std::nullopt;
  return std::move(protocol_.output());
}

v1::SessionOutput* QuerySession::HandleInPlace(std::string_view line) {
  return Drive(protocol_.Handle(line)) ? &protocol_.output() : nullptr;
}

bool QuerySession::Drive(QueryProtocol::Step step) {
  while (const auto* run = std::get_if<QueryProtocol::RunTask>(&step)) {
    absl::StatusOr<worker::v1::Reply> reply = Run(*run);
    // Every reply of the session arrives here, so each function error is counted once.
    if (reply.ok() && function_errors_) CountFunctionErrors(*reply, function_errors_);
    step = protocol_.Resume(std::move(reply));
  }
  if (!protocol_.list_in_progress()) lease_.reset();
  protocol_.ReleaseLargeBuffers();
  return std::get<QueryProtocol::Answer>(step).output;
}

absl::StatusOr<worker::v1::Reply> QuerySession::Run(const QueryProtocol::RunTask& run) {
  switch (run.on) {
    case QueryProtocol::On::kAnyWorker:
      return runner_.Run(*run.task, run.deadline);
    case QueryProtocol::On::kNewLease: {
      absl::StatusOr<std::unique_ptr<pool::WorkerLease>> lease = runner_.Lease(run.deadline);
      if (!lease.ok()) return lease.status();
      lease_ = *std::move(lease);
      break;
    }
    case QueryProtocol::On::kLease:
      break;
  }
  return lease_->Exchange(*run.task, run.deadline);
}

}  // namespace cnp::couchdb
