#include "service/pool/context_inbox.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>

#include "asio/buffer.hpp"
#include "asio/post.hpp"
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
  // The armed wait ends with operation_aborted (or is destroyed with the context unrun); its
  // handler does not touch the inbox then.
  asio::error_code ignored;
  wakeup_.close(ignored);
}

void ContextInbox::Post(absl::AnyInvocable<void() &&> work) {
  if (context_.get_executor().running_in_this_thread()) {
    asio::post(context_, [work = std::move(work)]() mutable { std::move(work)(); });
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    posted_.push_back(std::move(work));
    if (signalled_) return;
    signalled_ = true;
  }
  const uint64_t one = 1;
  while (::write(wakeup_fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void ContextInbox::AwaitWakeup() {
  // A read, not an async_wait: asio tries a read at once, so a write that came while no wait
  // was armed (its edge seen with nothing queued) is found now rather than lost.
  wakeup_.async_read_some(asio::buffer(&count_, sizeof count_),
                          [this](const asio::error_code& ec, std::size_t) {
                            if (ec) return;  // closed: the inbox is going
                            RunPosted();
                            AwaitWakeup();
                          });
}

void ContextInbox::RunPosted() {
  std::vector<absl::AnyInvocable<void() &&>> batch;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(posted_);
    signalled_ = false;  // the eventfd was read: the next poster writes it again
  }
  for (auto& work : batch) std::move(work)();
}

}  // namespace cnp::pool
