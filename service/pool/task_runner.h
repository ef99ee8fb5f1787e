// Running tasks for a caller that may block its thread: run a task on some worker, or hold one
// worker for a multi-step exchange, each call returning once the answer is there. Its users are
// Upload, on the server's upload threads (BlockingTaskRunner, blocking_task_runner.h, over the
// pool), and a direct session's protocol inside a worker (QuerySession over
// worker::InProcessRunner, which runs the tasks in that very process). The request handlers
// await the pool instead (AsyncTaskRunner, async_task_runner.h). Tests may fake either.
#pragma once

#include <memory>
#include <stop_token>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker.pb.h"

namespace cnp::pool {

using worker::v1::Reply;
using worker::v1::Task;

// A worker held by one caller for a multi-step exchange (an interactive list function). The
// worker goes back to the pool when the lease is destroyed; a lease whose exchange failed
// half-way replaces its worker instead, so no other caller sees a worker in an unknown state.
class WorkerLease {
 public:
  virtual ~WorkerLease() = default;
  // Sends one task and waits for the next reply on the calling thread.
  virtual absl::StatusOr<Reply> Exchange(const Task& task, absl::Time deadline) = 0;
};

class TaskRunner {
 public:
  virtual ~TaskRunner() = default;

  // Runs `task` on a free worker and blocks the calling thread until its reply is there
  // (BlockingTaskRunner runs it on the pool's context and waits for it; InProcessRunner runs it
  // on the calling thread).
  // A Failure reply is returned as a Reply, not as an error status: whole-task failures that
  // are the user's (bad name, refused module, version mismatch) stay data. The status is an
  // error only for infrastructure failures:
  //   DEADLINE_EXCEEDED   the worker did not answer in time; it was killed and replaced
  //   UNAVAILABLE         the worker crashed, or the pool is shutting down
  //   RESOURCE_EXHAUSTED  the queue of callers waiting for a worker is full
  // Code updated on disk needs no retry here: a worker asked for a version it has not loaded
  // imports the module anew itself when its files changed (see FunctionRegistry).
  virtual absl::StatusOr<Reply> Run(const Task& task, absl::Time deadline) = 0;

  // Run, for a caller whose own call can be cancelled (Upload: its client cancels or goes
  // away, its deadline passes, the server shuts down): a stop requested through `stop` ends
  // the wait at once with CANCELLED, as a cancelled call's await of the pool does - a task still
  // waiting for a worker is dropped and never runs, a worker running it is killed and replaced.
  // A stop requested before the call sends nothing. The default cannot stop: it runs as Run
  // (InProcessRunner runs the task on the calling thread; fakes answer at once).
  virtual absl::StatusOr<Reply> RunUnlessStopped(const Task& task, absl::Time deadline,
                                                 std::stop_token /*stop*/) {
    return Run(task, deadline);
  }

  // Holds one worker for a multi-step exchange.
  virtual absl::StatusOr<std::unique_ptr<WorkerLease>> Lease(absl::Time deadline) = 0;
};

}  // namespace cnp::pool
