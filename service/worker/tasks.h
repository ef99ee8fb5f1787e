// One handler per kind of task. Each returns the complete Reply for its task; user exceptions
// become per-item errors inside it, whole-task problems a Failure.
#pragma once

#include "absl/status/statusor.h"
#include "service/worker/frame_reader.h"
#include "service/worker/function_registry.h"
#include "worker.pb.h"

namespace cnp::worker {

v1::Reply RunMap(FunctionRegistry& registry, cnp::v1::MapRequest& request);
v1::Reply RunReduce(FunctionRegistry& registry, const cnp::v1::ReduceRequest& request);
v1::Reply RunValidate(FunctionRegistry& registry, const cnp::v1::ValidateRequest& request);
v1::Reply RunDesignFunction(FunctionRegistry& registry,
                            const cnp::v1::DesignFunctionRequest& request);
v1::Reply RunResolve(FunctionRegistry& registry, const cnp::v1::ResolveRequest& request);

// Runs an interactive list to its end, exchanging its intermediate steps itself: replies go
// to `fd`, the following list_row tasks come from `reader`. Returns the final reply, or an
// error when the socket failed (the worker should exit).
absl::StatusOr<v1::Reply> RunInteractiveList(FunctionRegistry& registry,
                                             const v1::ListStart& start, FrameReader& reader,
                                             int fd);

}  // namespace cnp::worker
