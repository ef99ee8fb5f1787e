#include "service/pool/worker_output_relay.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "service/common/line_budget.h"
#include "service/common/log.h"

namespace cnp::pool {
namespace {

// One pipe's reading: its descriptor, whose it is, and the start of a line not yet ended.
struct RelayedPipe {
  int fd;
  std::string pid;
  std::string pending;
};

// As many lines as a worker lets through of what its functions print (builtin_module.cc), for
// all workers together.
LineBudget& RelayedLines() {
  // Never destroyed: the relay's thread may write a line while the process exits.
  static auto* budget =
      new LineBudget(200, 256 << 10, "lines workers wrote to their stdout or stderr");
  return *budget;
}

// The longest piece of a line one event carries: a longer line is relayed in pieces, each
// counted against the budget, rather than cut to what one log line holds (PIPE_BUF when the
// log is a pipe) and the rest lost uncounted. Room is left for escapes and the event's fields.
constexpr size_t kPieceBytes = 1 << 10;

void Relay(absl::string_view line, const std::string& pid) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  do {
    const absl::string_view piece = line.substr(0, kPieceBytes);
    line.remove_prefix(piece.size());
    RelayedLines().Write([&] {
      return FormatEvent(LogLevel::kWarning, piece,
                         {{"stream", "raw"}, {"worker_pid", pid, true}});
    });
  } while (!line.empty());
}

// Relays the lines `chunk` completes; the rest waits in `pipe.pending`.
void RelayChunk(RelayedPipe& pipe, absl::string_view chunk) {
  for (size_t newline; (newline = chunk.find('\n')) != absl::string_view::npos;) {
    if (pipe.pending.empty()) {
      Relay(chunk.substr(0, newline), pipe.pid);
    } else {
      pipe.pending.append(chunk.data(), newline);
      Relay(pipe.pending, pipe.pid);
      pipe.pending.clear();
    }
    chunk.remove_prefix(newline + 1);
  }
  pipe.pending.append(chunk.data(), chunk.size());
  if (pipe.pending.size() >= kPieceBytes) {  // a line that has not ended, in pieces meanwhile
    const size_t whole = pipe.pending.size() / kPieceBytes * kPieceBytes;
    Relay(absl::string_view(pipe.pending).substr(0, whole), pipe.pid);
    pipe.pending.erase(0, whole);
  }
}

// The thread that reads every pipe, for the server's life.
class RelayThread {
 public:
  RelayThread() : wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (wake_ < 0) {
      LogWarning("eventfd: ", std::strerror(errno),
                 "; the relay of workers' output looks for new workers every 100 ms");
    }
    std::thread([this] { Run(); }).detach();
  }

  void Add(int fd, pid_t pid) {
    {
      absl::MutexLock lock(&mu_);
      added_.push_back(RelayedPipe{fd, absl::StrCat(pid), ""});
    }
    const uint64_t one = 1;
    (void)!::write(wake_, &one, sizeof one);
  }

 private:
  void Run() {
    std::vector<RelayedPipe> pipes;
    std::vector<pollfd> polled;
    std::string chunk(64 << 10, '\0');
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        for (RelayedPipe& pipe : added_) pipes.push_back(std::move(pipe));
        added_.clear();
      }
      polled.assign(1, pollfd{wake_, POLLIN, 0});
      for (const RelayedPipe& pipe : pipes) polled.push_back(pollfd{pipe.fd, POLLIN, 0});
      // Without its eventfd (none could be made), new pipes are found by looking again.
      if (::poll(polled.data(), polled.size(), wake_ < 0 ? 100 : -1) < 0) continue;  // EINTR
      if (polled[0].revents != 0) {
        uint64_t count;
        (void)!::read(wake_, &count, sizeof count);
      }
      for (size_t i = pipes.size(); i-- > 0;) {
        if (polled[i + 1].revents == 0) continue;
        RelayedPipe& pipe = pipes[i];
        const ssize_t n = ::read(pipe.fd, chunk.data(), chunk.size());
        if (n > 0) {
          RelayChunk(pipe, absl::string_view(chunk.data(), static_cast<size_t>(n)));
          continue;
        }
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        // The end: every process that held the pipe (the worker, what it started) has ended.
        if (!pipe.pending.empty()) Relay(pipe.pending, pipe.pid);
        ::close(pipe.fd);
        pipes.erase(pipes.begin() + static_cast<ptrdiff_t>(i));
      }
    }
  }

  const int wake_;
  absl::Mutex mu_;
  std::vector<RelayedPipe> added_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

void RelayWorkerOutput(int pipe_fd, pid_t pid) {
  // Never destroyed, as its thread runs until the process ends.
  static auto* relay = new RelayThread;
  relay->Add(pipe_fd, pid);
}

}  // namespace cnp::pool
