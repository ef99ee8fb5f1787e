// One worker as the pool sees it: something that answers Tasks with Replies, one at a time,
// and can be killed. The real one is a cnp-worker process (process_worker.h); tests use fakes
// that answer from a script, so the pool's policies are tested without processes.
//
// Everything here is awaited on the pool's executor and touched only from it, but for a kept
// worker's TryQuickExchange, which its holder runs on its own thread (see there).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "worker.pb.h"

namespace cnp::pool {

using worker::v1::Reply;
using worker::v1::Task;

// What a reply frame may hold beyond its task's max_answer_bytes before it is refused unread:
// the worker keeps its whole serialized Reply within the limit, so this is only a margin.
inline constexpr uint64_t kAnswerSlackBytes = 64 << 10;

// What Worker::TryQuickExchange did.
struct QuickExchange {
  enum class Outcome {
    kUnsupported,  // nothing: exchange on the pool's context instead (Exchange)
    kDone,         // `reply` is the exchange's result; errors as Exchange's
    kPending,      // the task is sent, or partly: FinishExchange completes the exchange
    kEndedBefore,  // nothing was sent: the worker had ended (or spoke unprompted) meanwhile
  };
  explicit QuickExchange(Outcome outcome = Outcome::kUnsupported,
                         absl::StatusOr<Reply> reply = absl::UnknownError("no reply"))
      : outcome(outcome), reply(std::move(reply)) {}
  Outcome outcome;
  absl::StatusOr<Reply> reply;  // the result when kDone; otherwise UNKNOWN, unused
};

// Where the log() lines of a task with Task.logs_early go as its function makes them, before
// its answer: each interim Reply (task_log) is handed over as it is read, on whichever thread
// reads the worker's socket (the pool's, or a quick exchange's caller's), in the order the
// lines came. Returns when the task's deadline is from then on (a CouchDB session's command
// has its deadline restarted by each line, as CouchDB restarts its read timeout), or an earlier
// time for no change (a line CouchDB will not get).
class TaskLogListener {
 public:
  virtual ~TaskLogListener() = default;
  virtual absl::Time OnLog(Reply interim) = 0;
};

class Worker {
 public:
  virtual ~Worker() = default;

  // Where the interim task_log frames of the exchanges from now on go (null: nowhere; a worker
  // that sends one unasked breaks the protocol, DATA_LOSS). The caller keeps `listener` alive
  // until the exchanges are over, and sets it only between exchanges.
  virtual void ForwardLogsTo(TaskLogListener* listener) { (void)listener; }

  // Sends `task` and awaits its reply. Not a reply, the task never written (the worker is as
  // it was and is kept; TaskWasNotSent):
  //   RESOURCE_EXHAUSTED  the task is larger than a frame may be (kMaxFrameBytes)
  //   INTERNAL            the task could not be serialized
  // Not a reply, the task written or partly written:
  //   CANCELLED    the awaiting coroutine was cancelled (terminal cancellation) mid-exchange
  //   UNAVAILABLE  the worker closed its end: it crashed or exited
  //   DATA_LOSS    the worker sent something that is not a Reply
  //   OUT_OF_RANGE the reply's length, read before anything else of it, is over the task's
  //                max_answer_bytes plus kAnswerSlackBytes: the rest is left unread
  // After any of these the worker's state is unknown and it must be killed; the pool does so.
  // No other code is returned.
  // Deadlines are the caller's: when one passes, it kills the worker, which ends the exchange.
  virtual asio::awaitable<absl::StatusOr<Reply>> Exchange(const Task& task) = 0;

  // Whether the worker, idle since its last reply, has ended though Ended() may not have said
  // so yet (a process's socket closes before its end is reported), or has broken the protocol
  // by writing unprompted: either way a task must not go to it.
  virtual bool EndedWhileIdle() { return false; }

  // An exchange on the calling thread, for the holder of a lease on a thread other than the
  // pool's (a Session stream's gRPC thread): sends `task` and blocks for at most `wait` for
  // the whole reply. A reply that comes within it costs no thread hand-over; one that does not
  // is left kPending, for FinishExchange on the pool's context. Meanwhile the pool's context
  // touches only what the exchange does not use: Kill(), Ended() and ResidentBytes(). The default does nothing (kUnsupported).
  virtual QuickExchange TryQuickExchange(const Task& task, absl::Duration wait);
  // Completes an exchange TryQuickExchange left kPending: sends what is left of the task and
  // awaits the reply, on the pool's context. Errors as Exchange's.
  virtual asio::awaitable<absl::StatusOr<Reply>> FinishExchange();

  // Asks the process to end now (SIGKILL) and ends an exchange in progress at once, with
  // UNAVAILABLE. Never blocks; await Ended() to know the process has ended.
  virtual void Kill() = 0;

  // Completes once the worker has ended (the process was reaped), saying how: "exited with
  // status 1", "killed by signal 11 (Segmentation fault)". Cancellable: nullopt when the wait
  // was cancelled before the end.
  virtual asio::awaitable<std::optional<std::string>> Ended() = 0;

  virtual pid_t pid() const = 0;
  // Resident memory in bytes, or 0 when unknown.
  virtual int64_t ResidentBytes() const = 0;
  // The address space it maps in bytes, which its memory cap limits (memory_cap.h); 0 when
  // unknown.
  virtual int64_t AddressSpaceBytes() const = 0;
  // AddressSpaceBytes once it had started (its preloads imported); 0 when unknown.
  virtual int64_t StartedAddressSpaceBytes() const { return 0; }
};

// Whether an error from Worker::Exchange came before anything was written (see there): the
// caller's to answer as it is, the worker unharmed.
inline bool TaskWasNotSent(const absl::Status& status) {
  return absl::IsResourceExhausted(status) || absl::IsInternal(status);
}

// Starts workers: spawns one and awaits its startup handshake.
class WorkerFactory {
 public:
  virtual ~WorkerFactory() = default;

  // A worker that answered its first frame within `timeout`, or why none did: the message says
  // what happened to the process ("it did not answer within 30s", "...; the worker exited with
  // status 1"). A worker that failed to start has already been killed and reaped.
  virtual asio::awaitable<absl::StatusOr<std::unique_ptr<Worker>>> Start(
      int index, absl::Duration timeout) = 0;
};

// How a worker whose exchange failed has ended: awaited for up to `grace` (a crashing process
// closes its socket a moment before it can be reaped), else it is killed and that is said.
asio::awaitable<std::string> HowItEnded(Worker& worker, absl::Duration grace);

}  // namespace cnp::pool
