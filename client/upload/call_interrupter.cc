#include "client/upload/call_interrupter.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

namespace cnp::client::upload {
namespace {

// The pipe's write end, for the handler: a signal handler may only write(2), and the watcher
// thread, not the handler, cancels the call.
std::atomic<int> interrupt_pipe{-1};
std::atomic<bool> interrupted{false};
static_assert(std::atomic<int>::is_always_lock_free, "read in a signal handler");
static_assert(std::atomic<bool>::is_always_lock_free, "read in a signal handler");

void OnInterrupt(int signal) {
  if (interrupted.exchange(true)) {
    std::signal(signal, SIG_DFL);
    std::raise(signal);
    return;
  }
  const int saved_errno = errno;  // the interrupted code may be about to read its own
  const unsigned char number = static_cast<unsigned char>(signal);
  (void)!write(interrupt_pipe.load(), &number, 1);
  errno = saved_errno;
}

}  // namespace

CallInterrupter::CallInterrupter(grpc::ClientContext& context) {
  if (pipe2(pipe_, O_CLOEXEC) != 0) return;  // no watch: the signals act as they did
  interrupted = false;
  interrupt_pipe = pipe_[1];
  watcher_ = std::thread([this, &context] { Watch(context); });
  struct sigaction action {};
  action.sa_handler = OnInterrupt;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &previous_int_);
  sigaction(SIGTERM, &action, &previous_term_);
}

CallInterrupter::~CallInterrupter() {
  if (pipe_[1] < 0) return;
  sigaction(SIGINT, &previous_int_, nullptr);
  sigaction(SIGTERM, &previous_term_, nullptr);
  const unsigned char end = 0;
  (void)!write(pipe_[1], &end, 1);
  watcher_.join();
  interrupt_pipe = -1;
  close(pipe_[0]);
  close(pipe_[1]);
}

void CallInterrupter::Watch(grpc::ClientContext& context) {
  unsigned char number = 0;
  ssize_t got;
  while ((got = read(pipe_[0], &number, 1)) < 0 && errno == EINTR) {
  }
  if (got != 1 || number == 0) return;
  signal_ = number;
  context.TryCancel();
}

}  // namespace cnp::client::upload
