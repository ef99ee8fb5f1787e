#include "service/metrics/service_metrics.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace cnp::metrics {
namespace {

// Families are made on first use and live as long as the process: hooks may run from any
// thread until exit.
Family<Counter>& Calls() {
  static auto* f = new Family<Counter>("cnp_calls_total", "RPCs served, by RPC and gRPC status code.",
                                       {"rpc", "code"});
  return *f;
}
Family<Histogram>& CallDuration() {
  static auto* f = new Family<Histogram>("cnp_call_duration_seconds",
                                         "How long RPCs took, from admission to their status.",
                                         {"rpc"}, LatencyBuckets());
  return *f;
}
Family<Counter>& CallMemoryRefusals() {
  static auto* f = new Family<Counter>(
      "cnp_call_memory_refusals_total",
      "Calls, or messages of a stream, refused RESOURCE_EXHAUSTED because the requests and "
      "answers calls hold would pass --max-grpc-memory, by RPC.",
      {"rpc"});
  return *f;
}
Family<Counter>& UnreadAnswerCancels() {
  static auto* f = new Family<Counter>(
      "cnp_unread_answer_cancels_total",
      "Calls and streams cancelled because their client did not take an answer within "
      "--call-timeout (and a second per MiB of it) of it being ready, by RPC.",
      {"rpc"});
  return *f;
}
Family<Counter>& FunctionErrors() {
  static auto* f = new Family<Counter>(
      "cnp_function_errors_total",
      "Documents or items on which a user function raised, by function; a module whose code "
      "raised on import, by the module (past 1000 names: \"other\").",
      {"function"});
  return *f;
}
Family<Counter>& WorkerStarts() {
  static auto* f = new Family<Counter>("cnp_worker_starts_total",
                                       "Worker processes started, first starts and restarts, by pool (batch, session).",
                                       {"pool"});
  return *f;
}
Family<Counter>& WorkerExits() {
  static auto* f = new Family<Counter>(
      "cnp_worker_exits_total",
      "Worker processes that ended, by cause (crash, deadline, cancel, recycle, reload, memory, "
      "oversized, surplus) and pool (batch, session).",
      {"cause", "pool"});
  return *f;
}
Family<Gauge>& QueueDepthFamily() {
  static auto* f = new Family<Gauge>("cnp_queue_depth", "Tasks waiting for a free worker.", {});
  return *f;
}
Family<Histogram>& QueueWait() {
  static auto* f = new Family<Histogram>("cnp_queue_wait_seconds",
                                         "How long tasks waited for a free worker.", {},
                                         LatencyBuckets());
  return *f;
}
Family<Gauge>& Sessions() {
  static auto* f = new Family<Gauge>(
      "cnp_sessions_active", "CouchDB sessions open on the server side, by kind (direct, stream).",
      {"kind"});
  return *f;
}
Family<Gauge>& Resident() {
  static auto* f = new Family<Gauge>("cnp_worker_resident_bytes",
                                     "Resident memory of each worker slot, from the memory watch.",
                                     {"worker"});
  return *f;
}

Family<Gauge>& SessionResident() {
  static auto* f = new Family<Gauge>(
      "cnp_session_workers_resident_bytes",
      "Resident memory of the session workers (spares and in a session): their sum and the "
      "largest, from the session pool's memory watch.",
      {"stat"});
  return *f;
}

}  // namespace

void DeclareAll() {
  Calls();
  CallDuration();
  CallMemoryRefusals();
  UnreadAnswerCancels();
  FunctionErrors();
  WorkerStarts().Get({"batch"});
  WorkerStarts().Get({"session"});
  WorkerExits();
  QueueDepthFamily().Get({});
  QueueWait().Get({});
  Sessions().Get({"direct"});
  Sessions().Get({"stream"});
  Resident();
  SessionResident().Get({"sum"});
  SessionResident().Get({"max"});
}

RpcMetrics::RpcMetrics(absl::string_view rpc) {
  const std::string name(rpc);
  for (int code = 0; code < kCodes; ++code) calls_[code] = nullptr;
  // Series for codes a call never ended with stay absent from the scrape until they occur.
  duration_ = &CallDuration().Get({name});
  DeclareRpc(rpc);
  rpc_ = name;
}

void RpcMetrics::CallEnded(int code, absl::Duration elapsed) {
  if (code < 0 || code >= kCodes) code = 2;  // UNKNOWN
  Counter* counter = calls_[code].load(std::memory_order_acquire);
  if (counter == nullptr) {
    counter = &Calls().Get({rpc_, absl::StrCat(code)});
    calls_[code].store(counter, std::memory_order_release);
  }
  counter->Add();
  duration_->Observe(absl::ToDoubleSeconds(elapsed));
}

void CallRefusedUnread(absl::string_view rpc, int code) {
  Calls().Get({std::string(rpc), absl::StrCat(code)}).Add();
}

void DeclareRpc(absl::string_view rpc) {
  CallMemoryRefusals().Get({std::string(rpc)});
  UnreadAnswerCancels().Get({std::string(rpc)});
}

void CallMemoryRefused(absl::string_view rpc) {
  CallMemoryRefusals().Get({std::string(rpc)}).Add();
}

void UnreadAnswerCancelled(absl::string_view rpc) {
  UnreadAnswerCancels().Get({std::string(rpc)}).Add();
}

std::string FunctionLabel(absl::string_view function) {
  const size_t bar = function.find('|');
  int64_t version = 0;
  if (bar == absl::string_view::npos ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(function.substr(bar + 1)), &version)) {
    return std::string(function);
  }
  return absl::StrCat(function.substr(0, bar), "|", version);
}

void FunctionError(absl::string_view function, uint64_t count) {
  FunctionErrors().Get({FunctionLabel(function)}).Add(count);
}

void WorkerStarted(absl::string_view pool) { WorkerStarts().Get({std::string(pool)}).Add(); }

void WorkerExited(absl::string_view cause, absl::string_view pool) {
  WorkerExits().Get({std::string(cause), std::string(pool)}).Add();
}

Gauge& QueueDepth() {
  static Gauge& depth = QueueDepthFamily().Get({});
  return depth;
}

void QueueWaited(absl::Duration wait) {
  static Histogram& h = QueueWait().Get({});
  h.Observe(absl::ToDoubleSeconds(wait));
}

void WorkerResident(int slot, int64_t bytes) { Resident().Get({absl::StrCat(slot)}).Set(bytes); }

void SessionWorkersResident(int64_t sum, int64_t max) {
  static Gauge& sum_gauge = SessionResident().Get({"sum"});
  static Gauge& max_gauge = SessionResident().Get({"max"});
  sum_gauge.Set(sum);
  max_gauge.Set(max);
}

void SessionStarted(absl::string_view kind) { Sessions().Get({std::string(kind)}).Add(1); }
void SessionEnded(absl::string_view kind) { Sessions().Get({std::string(kind)}).Add(-1); }

}  // namespace cnp::metrics
