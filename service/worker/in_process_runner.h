// The pool's TaskRunner interface served inside this worker: a Task is run by calling the task
// handlers (tasks.h) directly, with no frame and no socket. It is what lets the CouchDB line
// protocol (service/couchdb/query_session.*) run in the worker for a direct session, the very
// code that cnp-server runs over the pool.
//
// Interactive lists are the one inversion. Over the pool, the list function sits in get_row()
// inside a worker while the server reads CouchDB's next line. Here the protocol and the
// function share one process, so the function runs on a thread of its own for the life of the
// list, and the two threads hand the GIL to each other at every step: exactly one of them runs
// at a time, so the worker's single-threaded state (CallContext) needs no locking.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "service/pool/task_runner.h"
#include "service/worker/function_registry.h"

namespace cnp::worker {

class InProcessRunner final : public pool::TaskRunner {
 public:
  // Must be made and used on the thread that holds the GIL (the worker's main thread).
  explicit InProcessRunner(FunctionRegistry& registry) : registry_(registry) {}

  // Deadlines are not enforced here: a direct session's watchdog (direct_session.h) ends the
  // whole worker when a command outlives CouchDB's timeout, which also covers code that never
  // returns to C++.
  absl::StatusOr<pool::Reply> Run(const pool::Task& task, absl::Time deadline) override;
  // A lease whose first task must be a list_start; see the comment at the top.
  absl::StatusOr<std::unique_ptr<pool::WorkerLease>> Lease(absl::Time deadline) override;

 private:
  pool::Reply RunHere(const pool::Task& task);

  FunctionRegistry& registry_;
  // Map documents and a session line's reduce values are parsed in place from a copy here.
  std::string doc_scratch_;
};

}  // namespace cnp::worker
