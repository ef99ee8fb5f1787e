// Map as gRPC carries it: the request arrives as bytes and the answer leaves as bytes (see
// calls::FunctionCalls::MapEncoded), so that a call of ten million tiny documents costs memory in
// proportion to its bytes, not ten million request and result objects.
#pragma once

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "grpcpp/grpcpp.h"
#include "service/calls/function_calls.h"

namespace cnp::rpc {

// After a call that moved at least this many bytes, the heap is trimmed once gRPC has sent its
// response, so that the memory of a big call goes back to the system rather than staying with
// the process (and the log says so); at most once in kGiveBackAtMostEvery.
constexpr size_t kGiveBackAfterBytes = 8 << 20;
constexpr absl::Duration kGiveBackAtMostEvery = absl::Seconds(1);

// Serves one Map call (or MapStream message), awaited by its handler; cancelling the await cancels the Map
// (calls::FunctionCalls says how). `request` is consumed (cleared as soon as it has been read);
// `request` and `response` must outlive the call. `grown` is told the answer's bytes as it is
// built (calls::AnswerGrowth). `rpc` ("Map", or "MapStream" for one of its messages) names the
// request in errors.
asio::awaitable<absl::Status> ServeEncodedMap(calls::FunctionCalls& calls, absl::Time deadline,
                                              grpc::ByteBuffer& request,
                                              grpc::ByteBuffer& response,
                                              calls::AnswerGrowth grown = nullptr,
                                              const char* rpc = "Map");

}  // namespace cnp::rpc
