// cnp-server's metrics (README "Metrics and logs"). The request paths call these one-line
// hooks; each looks its series up once where it can, so a call costs a few relaxed atomics.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "service/metrics/registry.h"

namespace cnp::metrics {

// Makes every family, so that a scrape lists them all (HELP and TYPE, and zero for the series
// without labels) before anything happened. Called when the metrics endpoint starts.
void DeclareAll();

// The series of one RPC, found once when the server starts listening for it.
class RpcMetrics {
 public:
  explicit RpcMetrics(absl::string_view rpc);
  // A call of this RPC ended with gRPC status `code` after `elapsed`.
  void CallEnded(int code, absl::Duration elapsed);

 private:
  static constexpr int kCodes = 17;  // grpc::StatusCode values 0..16
  std::string rpc_;
  // Made when a code first occurs, so the scrape lists only codes that happened.
  std::atomic<Counter*> calls_[kCodes];
  Histogram* duration_;
};

// A unary call of `rpc` ended with gRPC status `code` before any handler ran, so no RpcMetrics
// counted it: its token refused at its headers, on a TLS listener. Counted in cnp_calls_total,
// with no duration.
void CallRefusedUnread(absl::string_view rpc, int code);

// Makes the series of `rpc` below at 0, when the server starts listening for it: a panel of
// them had no data, and rate() missed the first, until something was refused or cancelled.
void DeclareRpc(absl::string_view rpc);
// A call (or one message of a stream) of `rpc` refused because the memory calls hold would
// pass --max-grpc-memory (service/rpc/call_memory.h).
void CallMemoryRefused(absl::string_view rpc);
// A call of `rpc` cancelled because its client did not take an answer within --call-timeout
// (service/rpc/unread_answer_watch.h).
void UnreadAnswerCancelled(absl::string_view rpc);

// A user function raised on `count` documents (or items) of a call or a session. Counted under
// FunctionLabel(function).
void FunctionError(absl::string_view function, uint64_t count = 1);
// The name a function is counted under: its version as the number it is. A worker reads the
// version as Python's int() would ("f| 1", "f|+01" and "f|1" are one function), so a caller
// could otherwise spell one function's errors into as many series as the registry takes
// (then "other" for every function after it; a security review).
std::string FunctionLabel(absl::string_view function);
// The same for one, as a FunctionErrorSink (service/common/function_errors.h).
inline void CountFunctionError(absl::string_view function) { FunctionError(function); }

// The worker pools' life. `pool`: "batch" (the stateless calls' pool::AsyncWorkerPool) or
// "session" (session::SessionWorkerPool's, one worker per direct session).
void WorkerStarted(absl::string_view pool = "batch");
// `cause`: crash, deadline, cancel, recycle, reload, memory, oversized or surplus.
void WorkerExited(absl::string_view cause, absl::string_view pool = "batch");
Gauge& QueueDepth();
void QueueWaited(absl::Duration wait);
// The resident memory of worker slot `slot`, as the pool's memory watch last read it.
void WorkerResident(int slot, int64_t bytes);
// The session workers' resident memory (spares and those in a session, up to --max-sessions
// plus the spares), as their pool's memory watch last read it: the sum and the largest, two
// series whatever their number.
void SessionWorkersResident(int64_t sum, int64_t max);

// Sessions the server serves or hands off: kind is "direct" or "stream".
void SessionStarted(absl::string_view kind);
void SessionEnded(absl::string_view kind);

// Counts a session as active for as long as it lives.
class ActiveSession {
 public:
  explicit ActiveSession(const char* kind) : kind_(kind) { SessionStarted(kind_); }
  ~ActiveSession() { SessionEnded(kind_); }
  ActiveSession(const ActiveSession&) = delete;
  ActiveSession& operator=(const ActiveSession&) = delete;

 private:
  const char* kind_;
};

}  // namespace cnp::metrics
