#include "service/pool/process_worker.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "asio/buffer.hpp"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"
#include "asio/write.hpp"
#include "service/common/framing.h"
#include "service/common/function_log.h"
#include "service/pool/worker_output_relay.h"

namespace cnp::pool {
namespace {

absl::Status IoFailure(const asio::error_code& ec, const char* what) {
  if (ec == asio::error::operation_aborted) {
    return absl::CancelledError(absl::StrCat("the exchange was cancelled while ", what));
  }
  if (ec == asio::error::eof || ec == asio::error::broken_pipe ||
      ec == asio::error::connection_reset) {
    return absl::UnavailableError("the worker closed its socket");
  }
  return absl::UnavailableError(absl::StrCat(what, " failed: ", ec.message()));
}

void AppendVarint(uint64_t value, std::string& out) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

// Numbers a serialized task by appending its sequence field: of a field that occurs twice the
// parser keeps the last, so the caller's task is sent as it is, without a copy to set it on.
void AppendSequence(uint64_t sequence, std::string& out) {
  constexpr uint64_t kVarintWireType = 0;
  AppendVarint((uint64_t{Task::kSequenceFieldNumber} << 3) | kVarintWireType, out);
  AppendVarint(sequence, out);
}

const Task& HandshakeTask() {
  static const Task* task = [] {
    auto* t = new Task;
    t->mutable_resolve();
    return t;
  }();
  return *task;
}

// A worker leads a process group of its own (worker_process.cc), so what its function started
// (a subprocess, a multiprocessing pool) dies with it instead of running on out of reach of
// deadlines and of the memory check, which reads the worker's own pid. The worker too, in case
// it was killed before it made its group. Only before the worker is reaped: until then its pid
// and group id cannot name another process.
void KillWorkerAndGroup(pid_t pid) {
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
}

}  // namespace

ProcessWorker::ProcessWorker(const asio::any_io_executor& executor, SpawnedWorker child,
                             int pidfd)
    : pid_(child.pid), socket_(executor, asio::local::stream_protocol(), child.fd),
      fd_(child.fd), pidfd_(executor, pidfd) {
  // Reads and writes are tried at once and awaited only when they would block.
  socket_.non_blocking(true);
}

ProcessWorker::~ProcessWorker() {
  if (reaped_) return;
  KillWorkerAndGroup(pid_);
  int status;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

absl::Status ProcessWorker::Begin(const Task* task) {
  // The longest reply read: what the task allows (its answer and the Reply around it), else
  // what a frame may be.
  exchange_ = ExchangeProgress{};
  exchange_.need = kFrameHeaderBytes;
  exchange_.max_answer_bytes = task != nullptr ? task->max_answer_bytes() : 0;
  exchange_.max_reply =
      exchange_.max_answer_bytes > 0
          ? std::min<uint64_t>(static_cast<uint64_t>(exchange_.max_answer_bytes) +
                                   kAnswerSlackBytes,
                               kMaxFrameBytes)
          : kMaxFrameBytes;
  // A Receive (no task) reads exactly one frame, its prefix first: a direct session's worker
  // sends several (session_progress frames, then its session_end), and the next may already
  // follow this one on the socket.
  exchange_.one_frame = task == nullptr;
  // frame_ keeps its size from one exchange to the next (value-initializing it anew would cost
  // more than the read), unless a large reply grew it (ReleaseLargeBuffers).
  constexpr size_t kFirstRead = 64 * 1024;
  if (frame_.size() < kFirstRead) frame_.resize(kFirstRead);
  if (task == nullptr) {
    out_.clear();
    return absl::OkStatus();
  }
  out_.assign(kFrameHeaderBytes, '\0');
  if (!task->AppendToString(&out_)) {
    ReleaseLargeBuffers();
    return absl::InternalError("cannot serialize the task");
  }
  AppendSequence(++sequence_, out_);
  const size_t payload = out_.size() - kFrameHeaderBytes;
  if (payload > kMaxFrameBytes) {
    ReleaseLargeBuffers();
    return absl::ResourceExhaustedError(absl::StrCat(
        "a task of ", payload, " bytes is over the ", kMaxFrameBytes,
        "-byte limit of a worker's frame; send fewer or smaller documents per call"));
  }
  EncodeFrameLength(static_cast<uint32_t>(payload), out_.data());
  return absl::OkStatus();
}

char* ProcessWorker::ReadPlace() { return frame_.data() + exchange_.have; }

size_t ProcessWorker::ReadRoom() {
  // Prefix and frame come in one read for all but large replies.
  if (exchange_.prefixed && frame_.size() < exchange_.need) frame_.resize(exchange_.need);
  return (exchange_.prefixed || exchange_.one_frame ? exchange_.need : frame_.size()) -
         exchange_.have;
}

absl::Status ProcessWorker::Took(size_t got) {
  exchange_.have += got;
  if (exchange_.prefixed || exchange_.have < kFrameHeaderBytes) return absl::OkStatus();
  const uint32_t length = DecodeFrameLength(frame_.data());
  if (length > kMaxFrameBytes) {
    return absl::DataLossError(
        absl::StrCat("worker (pid ", pid_, ") announced a frame of ", length, " bytes"));
  }
  // Refused from its length alone: not a byte more of it is read (the worker should have
  // answered ANSWER_TOO_LARGE itself; one that did not is killed, not drained).
  if (length > exchange_.max_reply) {
    ReleaseLargeBuffers();
    return absl::OutOfRangeError(absl::StrCat(
        "worker (pid ", pid_, ") announced a reply of ", length, " bytes, over the ",
        exchange_.max_answer_bytes, " bytes its task's answer may have"));
  }
  exchange_.prefixed = true;
  exchange_.need = kFrameHeaderBytes + static_cast<size_t>(length);
  return absl::OkStatus();
}

absl::StatusOr<Reply> ProcessWorker::ParseReply() {
  Reply reply;
  const bool parsed = reply.ParseFromArray(frame_.data() + kFrameHeaderBytes,
                                           static_cast<int>(exchange_.need - kFrameHeaderBytes));
  // An interim log line may be followed by more in the same read; an answer may not.
  const bool interim = parsed && reply.has_task_log();
  if (!interim) ReleaseLargeBuffers();
  if (!parsed) {
    return absl::DataLossError(absl::StrCat("worker (pid ", pid_, ") sent a malformed reply"));
  }
  // A reply to another task (a late one, written by a child a function forked, say) must not
  // be taken for this task's answer: the worker's state is unknown, and it is replaced.
  if (reply.sequence() != sequence_) {
    return absl::DataLossError(absl::StrCat("worker (pid ", pid_, ") answered task #",
                                            reply.sequence(), " when task #", sequence_,
                                            " was due"));
  }
  if (interim && log_listener_ == nullptr) {
    return absl::DataLossError(
        absl::StrCat("worker (pid ", pid_, ") sent a log line its task did not ask for"));
  }
  if (!interim && exchange_.have > exchange_.need) {
    return absl::DataLossError(
        absl::StrCat("worker (pid ", pid_, ") sent more than one reply to one task"));
  }
  return reply;
}

absl::Status ProcessWorker::ForwardLog(Reply interim) {
  log_listener_->OnLog(std::move(interim));
  // What the read brought past the line is the start of the next frame.
  const size_t left = exchange_.have - exchange_.need;
  std::memmove(frame_.data(), frame_.data() + exchange_.need, left);
  exchange_.have = 0;
  exchange_.need = kFrameHeaderBytes;
  exchange_.prefixed = false;
  return Took(left);
}

asio::awaitable<absl::StatusOr<Reply>> ProcessWorker::Transact(const Task* task) {
  if (killed_) co_return absl::UnavailableError("the worker was killed");
  if (absl::Status begun = Begin(task); !begun.ok()) co_return begun;
  if (task != nullptr) {
    // The socket is idle between exchanges, so a task almost always fits into its buffer at
    // once: written here, with no trip through the context's queue; only what does not fit is
    // awaited (Continue).
    asio::error_code ec;
    exchange_.written = socket_.write_some(asio::buffer(out_), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      exchange_.written = 0;
    } else if (ec) {
      co_return IoFailure(ec, "writing the task");
    }
  }
  co_return co_await Continue();
}

asio::awaitable<absl::StatusOr<Reply>> ProcessWorker::Continue() {
  if (killed_) co_return absl::UnavailableError("the worker was killed");
  asio::error_code ec;
  if (exchange_.written < out_.size()) {
    co_await asio::async_write(socket_, asio::buffer(out_) + exchange_.written,
                               asio::redirect_error(asio::use_awaitable, ec));
    if (killed_) co_return absl::UnavailableError("the worker was killed");
    if (ec) co_return IoFailure(ec, "writing the task");
    exchange_.written = out_.size();
  }
  ReleaseSentTask();
  // The reply is read as it arrives: the first read is tried at once (it finds nothing unless
  // the worker was quick) and then waits in the reactor, which reads as soon as the socket is
  // readable.
  for (;;) {
    while (!ReplyComplete()) {
      const size_t room = ReadRoom();
      const size_t got = co_await socket_.async_read_some(
          asio::buffer(ReadPlace(), room), asio::redirect_error(asio::use_awaitable, ec));
      if (killed_) co_return absl::UnavailableError("the worker was killed");
      if (ec) co_return IoFailure(ec, "reading the reply");
      if (absl::Status took = Took(got); !took.ok()) co_return took;
    }
    absl::StatusOr<Reply> reply = ParseReply();
    if (!reply.ok() || !reply->has_task_log()) co_return reply;
    if (absl::Status forwarded = ForwardLog(*std::move(reply)); !forwarded.ok()) {
      co_return forwarded;
    }
  }
}

QuickExchange ProcessWorker::TryQuickExchange(const Task& task, absl::Duration wait) {
  using Outcome = QuickExchange::Outcome;
  const auto done = [](absl::StatusOr<Reply> reply) {
    return QuickExchange(Outcome::kDone, std::move(reply));
  };
  const auto failed = [](const char* what) {
    return absl::UnavailableError(absl::StrCat(what, " failed: ", std::strerror(errno)));
  };
  if (killed_) return done(absl::UnavailableError("the worker was killed"));
  // A worker waiting for its next task says nothing: one whose socket is readable (or closed)
  // has died since it was last used, and the task can go elsewhere.
  if (SpokeUnprompted()) return QuickExchange(Outcome::kEndedBefore);
  if (absl::Status begun = Begin(&task); !begun.ok()) return done(begun);
  ssize_t sent;
  do {
    sent = ::send(fd_, out_.data(), out_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  // Nothing was delivered: the worker died after the check above, and the task may go
  // elsewhere just as if the check had seen it.
  if (sent < 0 && (errno == EPIPE || errno == ECONNRESET)) {
    return QuickExchange(Outcome::kEndedBefore);
  }
  if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return done(failed("writing the task"));
  exchange_.written = sent < 0 ? 0 : static_cast<size_t>(sent);
  if (exchange_.written < out_.size()) return QuickExchange(Outcome::kPending);
  ReleaseSentTask();

  const absl::Time until = absl::Now() + wait;
  // The worker has only just been given the task: nothing is read before the socket says
  // there is something (a read tried first would cost a system call per exchange for nothing).
  bool readable = false;
  for (;;) {
    if (ReplyComplete()) {
      absl::StatusOr<Reply> reply = ParseReply();
      if (!reply.ok() || !reply->has_task_log()) return done(std::move(reply));
      if (absl::Status forwarded = ForwardLog(*std::move(reply)); !forwarded.ok()) {
        return done(forwarded);
      }
      continue;
    }
    if (!readable) {
      const absl::Duration left = until - absl::Now();
      if (left <= absl::ZeroDuration() || killed_) return QuickExchange(Outcome::kPending);
      pollfd socket{fd_, POLLIN, 0};
      const timespec timeout = absl::ToTimespec(left);
      const int ready = ::ppoll(&socket, 1, &timeout, nullptr);
      if (ready == 0) return QuickExchange(Outcome::kPending);
      if (ready < 0 && errno != EINTR) return done(failed("waiting for the reply"));
      readable = ready > 0;
      continue;
    }
    const ssize_t got = ::recv(fd_, ReadPlace(), ReadRoom(), MSG_DONTWAIT);
    if (got > 0) {
      if (absl::Status took = Took(static_cast<size_t>(got)); !took.ok()) return done(took);
      continue;
    }
    if (got == 0) return done(absl::UnavailableError("the worker closed its socket"));
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return done(absl::UnavailableError("the worker closed its socket"));
    if (errno != EAGAIN && errno != EWOULDBLOCK) return done(failed("reading the reply"));
    readable = false;  // all of it read so far: wait for the rest
  }
}

// One large call must not leave every worker's buffers holding its size for good.
constexpr size_t kKeptBufferBytes = 1 << 20;

void ProcessWorker::ReleaseLargeBuffers() {
  if (frame_.capacity() > kKeptBufferBytes) std::string().swap(frame_);
  ReleaseSentTask();
}

void ProcessWorker::ReleaseSentTask() {
  // A large task's frame goes as soon as the worker has it, not with its reply: the reply may
  // be as large again, and be long in coming.
  if (out_.capacity() > kKeptBufferBytes) std::string().swap(out_);
}

asio::awaitable<absl::Status> ProcessWorker::SendWithDescriptors(const Task& task,
                                                                const std::vector<int>& fds) {
  if (killed_) co_return absl::UnavailableError("the worker was killed");
  if (!task.SerializeToString(&out_)) co_return absl::InternalError("cannot serialize the task");
  AppendSequence(++sequence_, out_);
  // Writable is awaited first; then the frame (tens of bytes) goes out in one sendmsg that does
  // not wait: the deadline "now" turns a full socket into an error instead of a blocked loop.
  asio::error_code ec;
  co_await socket_.async_wait(asio::local::stream_protocol::socket::wait_write,
                              asio::redirect_error(asio::use_awaitable, ec));
  if (killed_) co_return absl::UnavailableError("the worker was killed");
  if (ec) co_return IoFailure(ec, "writing the task");
  co_return WriteFrameWithDescriptors(socket_.native_handle(), out_, fds, absl::Now());
}

bool ProcessWorker::SpokeUnprompted() {
  pollfd p{fd_, POLLIN, 0};
  return ::poll(&p, 1, 0) != 0;
}

int ProcessWorker::DuplicatePidfd() {
  return ::fcntl(pidfd_.native_handle(), F_DUPFD_CLOEXEC, 0);
}

void ProcessWorker::Kill() {
  killed_ = true;
  if (!reaped_) KillWorkerAndGroup(pid_);
  // An exchange in progress ends now, not when the kernel closes the socket: a child the
  // function forked may hold the socket open past the worker's death.
  asio::error_code ignored;
  socket_.cancel(ignored);
}

bool ProcessWorker::TryReap() {
  // A worker that ended by itself (a direct session's watchdog, a crash) leaves what its
  // function started running in its group: that goes too, while the unreaped worker still
  // holds the group's id.
  siginfo_t info{};
  if (::waitid(P_PID, pid_, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid_) {
    ::kill(-pid_, SIGKILL);
  }
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      wait_status_ = status;
      how_ended_ = DescribeWaitStatus(status);
      return true;
    }
    if (r == 0) return false;
    if (errno == EINTR) continue;
    reaped_ = true;  // ECHILD: someone else reaped it
    how_ended_ = "ended (status unknown)";
    return true;
  }
}

asio::awaitable<std::optional<std::string>> ProcessWorker::Ended() {
  while (!reaped_ && !TryReap()) {
    asio::error_code ec;
    co_await pidfd_.async_wait(asio::posix::stream_descriptor::wait_read,
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return std::nullopt;
  }
  co_return how_ended_;
}

int64_t ProcessWorker::ResidentBytes() const { return ProcessMemoryOf(pid_).resident_bytes; }

int64_t ProcessWorker::AddressSpaceBytes() const {
  return ProcessMemoryOf(pid_).address_space_bytes;
}

ProcessMemory ProcessMemoryOf(pid_t pid) {
  std::ifstream statm(absl::StrCat("/proc/", pid, "/statm"));
  int64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return ProcessMemory{};
  const int64_t page = ::sysconf(_SC_PAGESIZE);
  return ProcessMemory{.address_space_bytes = size * page, .resident_bytes = resident * page};
}

asio::awaitable<absl::StatusOr<std::unique_ptr<Worker>>> ProcessWorkerFactory::Start(
    int /*index*/, absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<ProcessWorker>> worker = co_await StartProcess(timeout);
  if (!worker.ok()) co_return worker.status();
  co_return std::unique_ptr<Worker>(std::move(*worker));
}

asio::awaitable<absl::StatusOr<std::unique_ptr<ProcessWorker>>> ProcessWorkerFactory::StartProcess(
    absl::Duration timeout) {
  using asio::experimental::awaitable_operators::operator||;
  absl::StatusOr<SpawnedWorker> child = SpawnWorkerChild(command_);
  if (!child.ok()) co_return child.status();
  // From the start: what a worker that fails to start writes is what says why.
  RelayWorkerOutput(child->output, child->pid);
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, child->pid, 0));
  if (pidfd < 0) {
    const int err = errno;
    ::kill(child->pid, SIGKILL);
    ::close(child->fd);
    int status;
    while (::waitpid(child->pid, &status, 0) < 0 && errno == EINTR) {
    }
    co_return absl::UnavailableError(
        absl::StrCat("pidfd_open: ", std::strerror(err), " (Linux 5.3 or later is needed)"));
  }
  const asio::any_io_executor executor = co_await asio::this_coro::executor;
  auto worker = std::make_unique<ProcessWorker>(executor, *child, pidfd);

  asio::steady_timer timer(executor, absl::ToChronoNanoseconds(timeout));
  std::variant<absl::StatusOr<Reply>, std::monostate> answer =
      co_await (worker->Exchange(HandshakeTask()) || timer.async_wait(asio::use_awaitable));
  absl::Status status;
  if (answer.index() == 1) {
    status = absl::DeadlineExceededError(
        absl::StrCat("it did not answer within ", absl::FormatDuration(timeout)));
  } else if (!std::get<0>(answer).ok()) {
    // (A co_await of its own, with no temporary beside it: GCC 12 mishandles those.)
    const std::string how = co_await HowItEnded(*worker, absl::Milliseconds(200));
    status = absl::UnavailableError(
        absl::StrCat(std::get<0>(answer).status().message(), "; the worker ", how));
  } else if (std::get<0>(answer)->failure().code() == worker::v1::Failure::BAD_SETTING) {
    // Its settings are the server's (--allow-module=os): every start would fail the same way.
    status = absl::InvalidArgumentError(std::get<0>(answer)->failure().message());
  } else if (!std::get<0>(answer)->has_resolve()) {
    status = absl::InternalError(absl::StrCat("its first answer was unexpected: ",
                                              std::get<0>(answer)->ShortDebugString()));
  }
  if (status.ok()) {
    // The tracebacks of --preload-module imports that raised come with the answer.
    LogFunctionLines(std::get<0>(answer)->function_logs());
    worker->NoteStartedSize();
    co_return std::move(worker);
  }
  worker->Kill();
  co_await worker->Ended();
  co_return status;
}

}  // namespace cnp::pool
