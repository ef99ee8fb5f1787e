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
#include <string>

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

  asio::awaitable<absl::StatusOr<Reply>> Exchange(const Task& task) override;
  void Kill() override;
  asio::awaitable<std::string> Ended() override;
  pid_t pid() const override { return pid_; }
  int64_t ResidentBytes() const override;

 private:
  bool TryReap();

  const pid_t pid_;
  asio::local::stream_protocol::socket socket_;
  asio::posix::stream_descriptor pidfd_;
  bool reaped_ = false;
  bool killed_ = false;
  std::string how_ended_;
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

 private:
  const WorkerCommand command_;
};

}  // namespace cnp::pool
