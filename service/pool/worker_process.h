// One worker process: a cnp-worker child with an embedded CPython, reached over a socketpair.
// Owns the child: destroying a WorkerProcess kills and reaps it.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "worker.pb.h"

namespace cnp::pool {

struct WorkerCommand {
  std::string binary;             // path of cnp-worker
  std::vector<std::string> args;  // after argv[0]; the socket is always fd 3
};

// A started cnp-worker child: its pid and the parent's end of its socketpair (non-blocking,
// close-on-exec). The caller owns both: it must close the socket and reap the child.
struct SpawnedWorker {
  pid_t pid = -1;
  int fd = -1;
};
absl::StatusOr<SpawnedWorker> SpawnWorkerChild(const WorkerCommand& command);

class WorkerProcess {
 public:
  // Starts a worker. Only fails when the process cannot be created at all; a worker that
  // starts but cannot run Python shows up as a closed socket on its first exchange.
  static absl::StatusOr<std::unique_ptr<WorkerProcess>> Spawn(const WorkerCommand& command,
                                                              int id);
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  // Sends a task and waits for its reply on the calling thread. A reply that is not a
  // well-formed Reply, a closed socket and a missed deadline are errors; after any error the
  // worker is unusable and must be replaced.
  absl::Status Send(const worker::v1::Task& task, absl::Time deadline);
  // Sends a task with open descriptors attached (a direct session's pipes); the worker gets
  // its own copies, the caller still owns `fds`.
  absl::Status SendWithDescriptors(const worker::v1::Task& task, const std::vector<int>& fds,
                                   absl::Time deadline);
  absl::StatusOr<worker::v1::Reply> Receive(absl::Time deadline);
  absl::StatusOr<worker::v1::Reply> Exchange(const worker::v1::Task& task, absl::Time deadline);

  // Kills the worker (SIGKILL) and reaps it. Returns how it ended, for logs.
  std::string Kill();
  // After a failed exchange: reaps the worker if it died, and describes why (e.g. "killed by
  // signal 11 (Segmentation fault)"), else kills it.
  std::string ReapAfterFailure();
  // The same, awaited on the calling coroutine's executor instead of blocking its thread (the
  // control loop, which also runs the batch pool's exchanges): the end is awaited on a pidfd.
  asio::awaitable<std::string> AwaitEndAfterFailure();

  // The wait status once the process has been reaped (after Kill or ReapAfterFailure).
  std::optional<int> WaitStatus() const { return wait_status_; }

  // Resident memory in bytes, or 0 when unknown.
  int64_t ResidentBytes() const;

  int fd() const { return fd_; }
  pid_t pid() const { return pid_; }
  int id() const { return id_; }

 private:
  WorkerProcess(int id, pid_t pid, int fd) : id_(id), pid_(pid), fd_(fd) {}
  std::string Reap(bool block);

  int id_;
  pid_t pid_;
  int fd_;
  bool reaped_ = false;
  std::optional<int> wait_status_;
  std::string frame_;  // reused receive buffer
  std::string out_;    // reused send buffer
};

// "exited with status 1", "killed by signal 9 (Killed)".
std::string DescribeWaitStatus(int status);

}  // namespace cnp::pool
