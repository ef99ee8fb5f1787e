// The real Worker: a cnp-worker process reached over a socketpair, on the pool's context.
//
// The socket is an asio::local::stream_protocol::socket in non-blocking mode: an exchange writes
// a length-prefixed frame (service/common/framing.h) at once and awaits only the reply's
// arrival, which a cancellation or Kill() interrupts. The process's end is awaited on a pidfd (readable once it has exited)
// and reaped then with a waitpid that does not block.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "asio/any_io_executor.hpp"
#include "asio/local/stream_protocol.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "service/pool/worker.h"
#include "service/pool/worker_process.h"

namespace cnp::pool {

class ProcessWorker final : public Worker {
 public:
  // Takes over `child` and `pidfd` (a pidfd_open of the child).
  ProcessWorker(const asio::any_io_executor& executor, SpawnedWorker child, int pidfd);
  // A worker still running here is killed and reaped on the spot (SIGKILL makes that quick);
  // the pool avoids this by awaiting Ended() first.
  ~ProcessWorker() override;

  asio::awaitable<absl::StatusOr<Reply>> Exchange(const Task& task) override {
    return Transact(&task);
  }
  void Kill() override;
  asio::awaitable<std::string> Ended() override;
  pid_t pid() const override { return pid_; }
  int64_t ResidentBytes() const override;

  // What a direct session (service/session) needs besides an exchange: the task that hands the
  // worker CouchDB's pipes, sent with the descriptors attached (the worker gets its own copies;
  // the caller still owns `fds`), and, apart from it, the worker's frames: its session_progress
  // frames and the session_end when the session ends, which may be hours later. Receive reads
  // exactly one frame, leaving the next on the socket. Errors as Exchange's.
  asio::awaitable<absl::Status> SendWithDescriptors(const Task& task, const std::vector<int>& fds);
  asio::awaitable<absl::StatusOr<Reply>> Receive() { return Transact(nullptr); }
  // True once the worker has written something or closed its end. A worker waiting for its next
  // task never does, so a waiting spare for which this is true has died.
  bool SpokeUnprompted();
  // A duplicate of the process's pidfd (close-on-exec; the caller owns it; -1 on failure): it
  // becomes readable once the process has exited, for a watcher that must not hold the worker
  // (whoever owns the worker may hand it on or destroy it meanwhile). Reaping stays Ended()'s.
  int DuplicatePidfd();
  // What the send and receive buffers hold between exchanges, in bytes.
  size_t BufferBytes() const { return frame_.capacity() + out_.capacity(); }
  // The wait status once the process has been reaped (Ended() completed).
  std::optional<int> wait_status() const { return wait_status_; }

 private:
  // Writes `task` unless it is null, then awaits the reply.
  asio::awaitable<absl::StatusOr<Reply>> Transact(const Task* task);
  bool TryReap();
  // Frees the send and receive buffers when a large task or reply has grown them.
  void ReleaseLargeBuffers();

  const pid_t pid_;
  asio::local::stream_protocol::socket socket_;
  asio::posix::stream_descriptor pidfd_;
  bool reaped_ = false;
  bool killed_ = false;
  std::string how_ended_;
  std::optional<int> wait_status_;
  std::string out_;    // reused send buffer: length prefix and payload
  std::string frame_;  // reused receive buffer
};

// Spawns cnp-worker processes (`command`) and awaits their startup handshake: a Resolve of
// nothing, answered once Python started and couch_named_python was imported, no user code run.
class ProcessWorkerFactory final : public WorkerFactory {
 public:
  explicit ProcessWorkerFactory(WorkerCommand command) : command_(std::move(command)) {}
  asio::awaitable<absl::StatusOr<std::unique_ptr<Worker>>> Start(int index,
                                                                 absl::Duration timeout) override;
  // The same, for a caller that needs the process itself (direct sessions hand it descriptors).
  asio::awaitable<absl::StatusOr<std::unique_ptr<ProcessWorker>>> StartProcess(
      absl::Duration timeout);

 private:
  const WorkerCommand command_;
};

}  // namespace cnp::pool
