// The real Worker: a cnp-worker process reached over a socketpair, on the pool's context.
//
// The socket is an asio::local::stream_protocol::socket in non-blocking mode: an exchange writes
// a length-prefixed frame (service/common/framing.h) at once and awaits only the reply's
// arrival, which a cancellation or Kill() interrupts. A leaseholder on another thread may
// instead wait a short while for the reply itself (TryQuickExchange), with plain system calls
// on the descriptor, and leave the rest to the pool's context (FinishExchange). The process's end is awaited on a pidfd (readable once it has exited)
// and reaped then with a waitpid that does not block.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "asio/any_io_executor.hpp"
#include "asio/experimental/as_tuple.hpp"
#include "asio/local/stream_protocol.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/use_awaitable.hpp"
#include "service/pool/worker.h"
#include "service/pool/worker_process.h"

namespace cnp::pool {

// A process's memory, read from /proc/PID/statm; zeros when it cannot be read (it is gone).
struct ProcessMemory {
  int64_t address_space_bytes = 0;
  int64_t resident_bytes = 0;
};
ProcessMemory ProcessMemoryOf(pid_t pid);

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
  QuickExchange TryQuickExchange(const Task& task, absl::Duration wait) override;
  asio::awaitable<absl::StatusOr<Reply>> FinishExchange() override { return Continue(); }
  void ForwardLogsTo(TaskLogListener* listener) override { log_listener_ = listener; }
  void Kill() override;
  asio::awaitable<std::optional<std::string>> Ended() override;
  pid_t pid() const override { return pid_; }
  int64_t ResidentBytes() const override;
  int64_t AddressSpaceBytes() const override;
  int64_t StartedAddressSpaceBytes() const override { return started_address_space_; }
  // Once it answered its handshake: what it maps before any call, which the memory watch does
  // not hold against it (memory_cap.h).
  void NoteStartedSize() { started_address_space_ = AddressSpaceBytes(); }

  // What a direct session (service/session) needs besides an exchange: the task that hands the
  // worker CouchDB's pipes, sent with the descriptors attached (the worker gets its own copies;
  // the caller still owns `fds`), and, apart from it, the worker's frames: its session_progress
  // frames and the session_end when the session ends, which may be hours later. Receive reads
  // exactly one frame, leaving the next on the socket. Errors as Exchange's.
  asio::awaitable<absl::Status> SendWithDescriptors(const Task& task, const std::vector<int>& fds);
  asio::awaitable<absl::StatusOr<Reply>> Receive() { return Transact(nullptr); }
  // Completes once the worker's socket has something to read (a frame, or its end), reading
  // nothing: for racing the worker against other events. A Receive that loses such a race is
  // cancelled, and what it had read is lost with it.
  asio::awaitable<std::tuple<asio::error_code>> WaitReadable() {
    return socket_.async_wait(asio::local::stream_protocol::socket::wait_read,
                              asio::experimental::as_tuple(asio::use_awaitable));
  }
  // True once the worker has written something or closed its end. A worker waiting for its next
  // task never does, so a waiting spare for which this is true has died.
  bool SpokeUnprompted();
  bool EndedWhileIdle() override { return SpokeUnprompted(); }
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
  // Serializes `task` (null: none, only a frame is read) into out_ and starts an exchange.
  absl::Status Begin(const Task* task);
  // Writes what is left of the task and reads the rest of the reply, awaiting the socket.
  asio::awaitable<absl::StatusOr<Reply>> Continue();
  // Where the next read goes and how much of it; then Took() counts what it got, which is an
  // error for a reply refused from its length.
  char* ReadPlace();
  size_t ReadRoom();
  absl::Status Took(size_t got);
  bool ReplyComplete() const { return exchange_.prefixed && exchange_.have >= exchange_.need; }
  // The frame read, as a Reply: the answer, or an interim log line for ForwardLog.
  absl::StatusOr<Reply> ParseReply();
  // Hands an interim log line to the listener and starts reading the next frame with what the
  // read brought past it.
  absl::Status ForwardLog(Reply interim);
  bool TryReap();
  // Frees the send and receive buffers when a large task or reply has grown them.
  void ReleaseLargeBuffers();
  // Frees the send buffer, when a large task has grown it, once the worker has the task.
  void ReleaseSentTask();

  // The exchange in progress: how much of the task (in out_) is written, of the reply (in
  // frame_) read.
  struct ExchangeProgress {
    size_t written = 0;
    size_t have = 0;
    size_t need = 0;
    bool prefixed = false;
    uint64_t max_reply = 0;       // the longest reply read
    int64_t max_answer_bytes = 0;  // the task's, for the message when a reply is over it
    bool one_frame = false;        // a Receive: exactly one frame, prefix first
  };

  const pid_t pid_;
  int64_t started_address_space_ = 0;  // read once it answered its handshake
  asio::local::stream_protocol::socket socket_;
  const int fd_;  // socket_'s, for TryQuickExchange's plain system calls on another thread
  asio::posix::stream_descriptor pidfd_;
  bool reaped_ = false;
  // Set by Kill() on the pool's context while a quick exchange may run on another thread.
  std::atomic<bool> killed_ = false;
  ExchangeProgress exchange_;
  // The number of the last task sent (worker.proto's Task.sequence), which every reply to it
  // echoes.
  uint64_t sequence_ = 0;
  TaskLogListener* log_listener_ = nullptr;  // ForwardLogsTo's
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
