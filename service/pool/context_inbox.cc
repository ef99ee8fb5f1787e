#include "service/pool/context_inbox.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <utility>

#include "asio/buffer.hpp"
#include "service/common/log.h"

namespace cnp::pool {
namespace {

int MakeEventFd() {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) {
    // Without it no call could reach the pool: nothing sensible is left to do.
    LogError("eventfd failed (errno ", errno, "): the worker pool cannot take calls");
    std::abort();
  }
  return fd;
}

}  // namespace

ContextInbox::ContextInbox(asio::io_context& context)
    : context_(context), wakeup_(context, MakeEventFd()) {
  wakeup_fd_ = wakeup_.native_handle();
  AwaitWakeup();
}

ContextInbox::~ContextInbox() {
  *alive_ = false;
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;  // posts from here on (a dropped work's destructor may post) are dropped
  }
  asio::error_code ignored;
  wakeup_.close(ignored);
  // Destroying the work destroys what it holds (coroutine frames), outside the lock.
  for (;;) {
    std::vector<absl::AnyInvocable<void() &&>> left;
    {
      absl::MutexLock lock(&mu_);
      left.swap(posted_);
    }
    if (left.empty()) break;
  }
}

void ContextInbox::Post(absl::AnyInvocable<void() &&> work) {
  {
    absl::ReleasableMutexLock lock(&mu_);
    if (closed_) {
      lock.Release();
      return;  // `work` is destroyed here, outside the lock
    }
    posted_.push_back(std::move(work));
    if (signalled_) return;
    signalled_ = true;
  }
  const uint64_t one = 1;
  while (::write(wakeup_fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void ContextInbox::AwaitWakeup() {
  // A read, not an async_wait: asio tries a read at once, so a write that came while no read
  // was armed (its edge seen with nothing queued) is found now rather than lost.
  wakeup_.async_read_some(asio::buffer(&count_, sizeof count_),
                          [this, alive = alive_](const asio::error_code& ec, std::size_t) {
                            if (ec || !*alive) return;  // closed: the inbox is going or gone
                            RunPosted();
                          });
}

void ContextInbox::RunPosted() {
  std::vector<absl::AnyInvocable<void() &&>> batch;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(posted_);
    signalled_ = false;  // the eventfd was read: the next poster writes it again
  }
  // Armed again before the work runs, so that work which throws does not leave posts unread.
  AwaitWakeup();
  for (auto& work : batch) std::move(work)();
}

}  // namespace cnp::pool
