// Work handed to an io_context run by one thread, from other threads, without the hand-over
// making either thread sleep on a lock.
//
// asio::post from another thread wakes a loop blocked in epoll by an epoll_ctl made while the
// poster still holds the scheduler's mutex; the woken loop reaches for that mutex at once, finds
// it held, and sleeps on it again until the poster is done: two sleeps and two wake-ups per
// hand-over, on every call the gRPC threads give the pool. Here the poster pushes onto a list
// under a lock it holds for a push, then writes an eventfd; the loop reads the eventfd when it
// is readable, takes the list and runs it.
//
//   ContextInbox inbox(context);        // before the context runs on its thread
//   inbox.Post([] { ... });             // from any thread; runs on the context's thread
//
// The eventfd is awaited all the time, which is outstanding work for the context: run() returns
// only when stopped. Destroy the inbox once its context no longer runs; work never run is
// destroyed with it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "asio/io_context.hpp"
#include "asio/posix/stream_descriptor.hpp"

namespace cnp::pool {

class ContextInbox {
 public:
  explicit ContextInbox(asio::io_context& context);
  ~ContextInbox();
  ContextInbox(const ContextInbox&) = delete;
  ContextInbox& operator=(const ContextInbox&) = delete;

  // Runs `work` on the context's thread, never inline, after the work posted before it from
  // the same thread (the context's own included). Once the inbox is closed, `work` is dropped.
  void Post(absl::AnyInvocable<void() &&> work);

  asio::io_context::executor_type executor() { return context_.get_executor(); }

 private:
  void AwaitWakeup();
  void RunPosted();

  asio::io_context& context_;
  // The eventfd; touched only on the context's thread once the first read is armed.
  asio::posix::stream_descriptor wakeup_;
  int wakeup_fd_;  // the same descriptor, written to by posters (a write(2) needs no asio)
  uint64_t count_ = 0;  // what the eventfd read gives; unused
  // False once the inbox is gone: a read completion still queued in the context must not
  // touch it if the context is ever run again.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  absl::Mutex mu_;
  std::vector<absl::AnyInvocable<void() &&>> posted_ ABSL_GUARDED_BY(mu_);
  // The eventfd has been written and the loop has not yet taken the list: later posters need
  // not write it again.
  bool signalled_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace cnp::pool
