// What each stateless call does, apart from its transport: turn the request into worker tasks,
// run them on the pool, and turn the replies into the response or a status a caller can act
// on. Every call is a coroutine awaited by the request's handler; it never blocks the thread
// it runs on.
//
// Cancellation: when the awaiting coroutine is cancelled (terminal cancellation through its
// cancellation slot: the client cancelled or went away), the pool drops or kills the tasks in
// flight, a Map starts none of its remaining parts, and the call completes with CANCELLED.
// A cancelled call starts no new work on the pool; it runs with throw_if_cancelled(false) (set
// by its RPC's coroutine), so what it still awaits completes with a status rather than throwing.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "cnp/v1/functions.pb.h"
#include "common/call_limit.h"
#include "service/calls/answer_growth.h"
#include "service/pool/async_task_runner.h"

namespace cnp::calls {

// A Map (or MapStream message), Reduce or Resolve naming more than kMaxFunctionsPerCall
// functions (common/call_limit.h) is RESOURCE_EXHAUSTED, marked "cnp-call-limit: functions
// 4096". Every part of a Map carries the names again.
//
// A Map's or a Reduce's function name longer than kMaxFunctionNameBytes (common/call_limit.h,
// what a worker accepts) is refused before any part carries it.
using ::cnp::kMaxFunctionNameBytes;

// RESOURCE_EXHAUSTED for a request naming more than kMaxFunctionsPerCall functions, marked
// "cnp-call-limit: functions 4096". A MapStream message's, a Reduce's or a Resolve's names are
// counted in their bytes before parsing (service/rpc/request_parsing.h); a unary Map reads its
// bytes itself (MapEncoded) and stops at the name past the limit the same way.
absl::Status TooManyFunctions();

struct CallOptions {
  // The longest any call may run, whatever deadline the client set.
  absl::Duration call_timeout = absl::Seconds(60);
  // Batches are split into parts of at least this many documents, spread over the workers.
  int min_docs_per_task = 64;
  // ...and of at most this many documents and about kMaxTaskBytes, run a few per worker at a
  // time: a document exists as an object only while its part is in flight.
  int max_docs_per_task = 4096;
  // The most documents one call may carry (--max-docs-per-call).
  int64_t max_docs_per_call = 1'000'000;
  // The most bytes a request or a response may have (--max-call-bytes; the transport refuses
  // larger requests before they reach us).
  int64_t max_call_bytes = 64 << 20;
};

// The typed calls consume their request, which moves into its worker's task; Map reads its
// request in place (MapEncoded). Every argument passed by reference must outlive the awaited
// call.
class FunctionCalls {
 public:
  FunctionCalls(pool::AsyncTaskRunner& runner, CallOptions options)
      : runner_(runner), options_(options) {}

  const CallOptions& options() const { return options_; }

  // Map on the wire forms of request and response, as the transport carries them: the
  // documents are read in place and copied into worker tasks a wave of a few parts per worker
  // at a time, and each part's answer is appended to `response` as a serialized MapResponse
  // (they concatenate into one; the chunks are a few MiB each), so memory follows the call's
  // bytes rather than its document count. On an error `response` is left empty. `grown`, when
  // given, is told the answer's bytes as it grows (AnswerGrowth). `rpc` names the request in
  // errors ("the MapStream request is not a valid cnp.v1.MapRequest").
  asio::awaitable<absl::Status> MapEncoded(std::string_view request, absl::Time deadline,
                                           std::vector<std::string>& response,
                                           AnswerGrowth grown = nullptr,
                                           std::string_view rpc = "Map");
  asio::awaitable<absl::Status> Reduce(v1::ReduceRequest& request, absl::Time deadline,
                                       v1::ReduceResponse& response);
  asio::awaitable<absl::Status> Validate(v1::ValidateRequest& request, absl::Time deadline,
                                         v1::ValidateResponse& response);
  asio::awaitable<absl::Status> CallDesignFunction(v1::DesignFunctionRequest& request,
                                                   absl::Time deadline,
                                                   v1::DesignFunctionResponse& response);
  asio::awaitable<absl::Status> Resolve(v1::ResolveRequest& request, absl::Time deadline,
                                        v1::ResolveResponse& response);

  // The earlier of the client's deadline and the server's own limit.
  absl::Time EffectiveDeadline(absl::Time client_deadline) const {
    return std::min(client_deadline, absl::Now() + options_.call_timeout);
  }
  // A pool's DEADLINE_EXCEEDED, with whose deadline a call's is (the pool says what ran out,
  // not which limit set it); any other status as it is.
  absl::Status WithDeadlineNote(absl::Status status) const;

 private:
  // A request that is one task on one worker: it moves into the task's `slot`, and the
  // response out of the reply's `answer`.
  template <class Request, class Response>
  asio::awaitable<absl::Status> RunOne(Request& request, Request* (pool::Task::*slot)(),
                                       Response* (pool::Reply::*answer)(),
                                       pool::Reply::KindCase kind, absl::Time deadline,
                                       Response& response);
  absl::Status CheckDocCount(int64_t docs) const;
  // How many parts a batch of `docs` documents holding `bytes` bytes is cut into.
  int64_t Parts(int64_t docs, int64_t bytes) const;

  pool::AsyncTaskRunner& runner_;
  const CallOptions options_;
};

}  // namespace cnp::calls
