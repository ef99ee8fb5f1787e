// An Asio execution context that owns one gRPC completion queue and is run by one thread (the
// idea of asio-grpc's GrpcContext, which Debian does not package; this is the small part the
// service needs, written here).
//
// The thread that calls Run() takes every event of the queue and resumes the coroutine that
// waits for it, inline: a call's steps never wait for another thread to be woken. Work posted
// from other threads (a worker pool's answer, a shutdown) goes into a queue of its own and
// wakes the loop with a grpc::Alarm set in the past, one alarm in flight at a time, and only
// when the loop is blocked in the queue (a busy loop looks at the posted work before it blocks).
//
//   GrpcContext context(builder.AddCompletionQueue());
//   asio::co_spawn(context, Serve(context), asio::detached);
//   std::thread thread([&] { context.Run(); });
//   ...
//   server->Shutdown(); context.Shutdown(); thread.join();
//
// gRPC aborts the process when an operation is started on a completion queue that has been
// shut down. So the queue is shut down on the context's own thread, where every operation is
// started (grpc_operations.h starts them only from there), and an operation started after that
// completes with ok=false without touching the queue.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "asio/execution.hpp"
#include "asio/execution_context.hpp"
#include "grpcpp/alarm.h"
#include "grpcpp/completion_queue.h"

namespace cnp::grpc_asio {

// The tag of one operation on the queue: the context calls Complete() with gRPC's `ok` on its
// thread when the operation's event comes.
class Operation {
 public:
  virtual void Complete(bool ok) = 0;

 protected:
  ~Operation() = default;
};

class GrpcContext;

// The context's executor. Possibly blocking by default (work given to it on the context's own
// thread runs at once, as io_context's does); `require(blocking.never)` makes it always queue.
class GrpcExecutor {
 public:
  explicit GrpcExecutor(GrpcContext& context, bool never_blocking = false) noexcept
      : context_(&context), never_blocking_(never_blocking) {}

  GrpcContext& query(asio::execution::context_t) const noexcept { return *context_; }
  asio::execution::blocking_t query(asio::execution::blocking_t) const noexcept {
    return never_blocking_ ? asio::execution::blocking_t(asio::execution::blocking.never)
                           : asio::execution::blocking_t(asio::execution::blocking.possibly);
  }
  static constexpr asio::execution::relationship_t query(asio::execution::relationship_t) {
    return asio::execution::relationship.fork;
  }
  GrpcExecutor require(asio::execution::blocking_t::never_t) const noexcept {
    return GrpcExecutor(*context_, true);
  }
  GrpcExecutor require(asio::execution::blocking_t::possibly_t) const noexcept {
    return GrpcExecutor(*context_, false);
  }

  template <class Function>
  void execute(Function&& function) const;

  bool running_in_this_thread() const noexcept;

  friend bool operator==(const GrpcExecutor& a, const GrpcExecutor& b) noexcept {
    return a.context_ == b.context_ && a.never_blocking_ == b.never_blocking_;
  }
  friend bool operator!=(const GrpcExecutor& a, const GrpcExecutor& b) noexcept {
    return !(a == b);
  }

 private:
  GrpcContext* context_;
  bool never_blocking_;
};

class GrpcContext : public asio::execution_context {
 public:
  using executor_type = GrpcExecutor;

  explicit GrpcContext(std::unique_ptr<grpc::ServerCompletionQueue> queue);
  // Work never run is destroyed, and with it the coroutine frames it holds. The queue must
  // have been shut down and drained by Run() (or never been used).
  ~GrpcContext();
  GrpcContext(const GrpcContext&) = delete;
  GrpcContext& operator=(const GrpcContext&) = delete;

  executor_type get_executor() noexcept { return GrpcExecutor(*this); }
  grpc::ServerCompletionQueue* queue() { return queue_.get(); }

  // Serves the queue and the posted work on the calling thread until the queue has been shut
  // down and every event drained; then runs the work that is left (operations that failed
  // because the queue was closed) and returns.
  void Run();

  // Shuts the queue down from the context's thread (queued behind the work already posted).
  // gRPC's server must have been shut down first (grpc::Server::Shutdown), so that no call
  // holds the queue open.
  void Shutdown();

  // Runs `start`, which starts one gRPC operation on the queue, unless the queue is shut down:
  // then false, and no event will come for it. Only on the context's thread.
  template <class Start>
  bool StartOperation(Start&& start) {
    if (closed_) return false;
    std::forward<Start>(start)();
    return true;
  }

  // Queues `work` to run on the context's thread, waking the loop if called from elsewhere.
  // Once the loop has ended, `work` is destroyed at once instead: nothing would ever run it
  // (a coroutine frame it holds goes with it).
  void Post(absl::AnyInvocable<void() &&> work);
  // True on the thread that runs this context's loop.
  bool RunningInThisThread() const;

 private:
  // The tag of the alarm that wakes the loop.
  class Wakeup final : public Operation {
   public:
    explicit Wakeup(GrpcContext& context) : context_(context) {}
    void Complete(bool ok) override;

   private:
    GrpcContext& context_;
  };

  // Runs one round of posted work: what was posted before the round began (what it posts
  // waits for the next round, after the queue's ready events). True when more work is
  // waiting; else false, with `sleeping_` set: the loop may block in the queue. `last`: the
  // loop ends; rounds run until no work is left, and work posted from then on is dropped.
  bool RunPosted(bool last = false);

  std::unique_ptr<grpc::ServerCompletionQueue> queue_;
  // Only the context's thread reads or writes it; Post() from elsewhere checks `shut_down_`.
  bool closed_ = false;
  Wakeup wakeup_{*this};
  absl::Mutex mu_;
  std::vector<absl::AnyInvocable<void() &&>> posted_ ABSL_GUARDED_BY(mu_);
  grpc::Alarm alarm_ ABSL_GUARDED_BY(mu_);
  bool alarm_set_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Run() has returned
  // The loop is (about to be) blocked in the queue: only then does posted work need the alarm.
  bool sleeping_ ABSL_GUARDED_BY(mu_) = false;
};

template <class Function>
void GrpcExecutor::execute(Function&& function) const {
  if (!never_blocking_ && context_->RunningInThisThread()) {
    std::decay_t<Function> now(std::forward<Function>(function));
    std::move(now)();
    return;
  }
  context_->Post(std::forward<Function>(function));
}

}  // namespace cnp::grpc_asio
