// One handler per kind of task. Each returns the complete Reply for its task; user exceptions
// become per-item errors inside it, whole-task problems a Failure.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "service/worker/frame_reader.h"
#include "service/worker/function_registry.h"
#include "worker.pb.h"

namespace cnp::worker {

// Each document is parsed from a copy in `scratch` (a buffer the caller reuses, so the copy
// allocates nothing once it is big enough): a document rapidjson must read twice (a number past
// a double's range) is read again from the request's own bytes.
v1::Reply RunMap(FunctionRegistry& registry, const cnp::v1::MapRequest& request,
                 std::string& scratch);
v1::Reply RunReduce(FunctionRegistry& registry, const cnp::v1::ReduceRequest& request);
// RunReduce for values that are the unchecked rest of a CouchDB session line (worker.proto's
// SessionLine): checked in the walk that builds them, a broken line answered Failure BAD_LINE
// before anything else. They are parsed from a copy in `scratch`, as RunMap does.
v1::Reply RunReduceOfLine(FunctionRegistry& registry, const cnp::v1::ReduceRequest& request,
                          const v1::SessionLine& line, std::string& scratch);
v1::Reply RunValidate(FunctionRegistry& registry, const cnp::v1::ValidateRequest& request);
v1::Reply RunDesignFunction(FunctionRegistry& registry,
                            const cnp::v1::DesignFunctionRequest& request);
// With `versions_as_run` (worker.proto's Task), a name without "|version" whose function has
// @version is an error that names the "|version" to add.
v1::Reply RunResolve(FunctionRegistry& registry, const cnp::v1::ResolveRequest& request,
                     bool versions_as_run);

// Where an interactive list's intermediate steps go and its next rows come from, while the
// function waits inside get_row().
class ListExchange {
 public:
  virtual ~ListExchange() = default;
  // Delivers one step (a Reply with a ListStep, done=false) and returns the next task, which
  // should be a list_row. An error ends the list: the function is unwound (ListAborted) and
  // RunInteractiveList returns that error.
  virtual absl::StatusOr<v1::Task> SendStep(v1::Reply step) = 0;
};

// Runs an interactive list to its end, exchanging its intermediate steps through `exchange`.
// Returns the final reply (a done ListStep or a Failure), or the exchange's error.
absl::StatusOr<v1::Reply> RunInteractiveList(FunctionRegistry& registry,
                                             const v1::ListStart& start, ListExchange& exchange);

// The same over the server's socket: steps go to `fd` as frames, the following list_row tasks
// come from `reader`. An error means the socket failed (the worker should exit).
absl::StatusOr<v1::Reply> RunInteractiveList(FunctionRegistry& registry,
                                             const v1::ListStart& start, FrameReader& reader,
                                             int fd);

}  // namespace cnp::worker
