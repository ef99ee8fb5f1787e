#include "service/grpc_asio/grpc_context.h"

#include <chrono>

namespace cnp::grpc_asio {
namespace {
thread_local const GrpcContext* t_running = nullptr;
}  // namespace

bool GrpcExecutor::running_in_this_thread() const noexcept {
  return context_->RunningInThisThread();
}

GrpcContext::GrpcContext(std::unique_ptr<grpc::ServerCompletionQueue> queue)
    : queue_(std::move(queue)) {}

GrpcContext::~GrpcContext() {
  // Destroying the work destroys the coroutine frames it holds, which may post more.
  for (;;) {
    std::vector<absl::AnyInvocable<void() &&>> left;
    {
      absl::MutexLock lock(&mu_);
      left.swap(posted_);
    }
    if (left.empty()) break;
  }
}

bool GrpcContext::RunningInThisThread() const { return t_running == this; }

void GrpcContext::Post(absl::AnyInvocable<void() &&> work) {
  const bool here = RunningInThisThread();
  absl::ReleasableMutexLock lock(&mu_);
  if (finished_) {
    lock.Release();
    return;  // `work` is destroyed here, outside the lock
  }
  posted_.push_back(std::move(work));
  // The loop looks at the posted work before it waits on the queue again, so its own thread
  // needs no alarm; nor does anyone once the queue is shut down (the loop then drains it).
  if (here || !sleeping_ || alarm_set_ || shut_down_) return;
  alarm_set_ = true;
  alarm_.Set(queue_.get(), std::chrono::system_clock::time_point(), &wakeup_);
}

void GrpcContext::Wakeup::Complete(bool) {
  absl::MutexLock lock(&context_.mu_);
  context_.alarm_set_ = false;
}

void GrpcContext::Shutdown() {
  Post([this] {
    if (closed_) return;
    closed_ = true;
    {
      absl::MutexLock lock(&mu_);
      shut_down_ = true;
    }
    queue_->Shutdown();
  });
}

bool GrpcContext::RunPosted(bool last) {
  std::vector<absl::AnyInvocable<void() &&>> batch;
  for (bool ran_a_round = false;; ran_a_round = true) {
    {
      absl::MutexLock lock(&mu_);
      if (posted_.empty()) {
        finished_ = last;
        sleeping_ = !last;  // decided with the queue seen empty, under the same lock
        return false;
      }
      // Work that posts more must not keep the queue's events waiting: one round at a time,
      // with the queue looked at in between (Run).
      if (ran_a_round && !last) return true;
      batch.swap(posted_);
    }
    for (auto& work : batch) std::move(work)();
    batch.clear();
  }
}

void GrpcContext::Run() {
  const GrpcContext* outer = t_running;
  t_running = this;
  void* tag;
  bool ok;
  for (;;) {
    bool got;
    if (RunPosted()) {
      // Only what the queue has ready now: the posted work comes next.
      const grpc::CompletionQueue::NextStatus status =
          queue_->AsyncNext(&tag, &ok, std::chrono::system_clock::time_point());
      if (status == grpc::CompletionQueue::TIMEOUT) continue;
      got = status == grpc::CompletionQueue::GOT_EVENT;
    } else {
      got = queue_->Next(&tag, &ok);
      absl::MutexLock lock(&mu_);
      sleeping_ = false;
    }
    if (!got) break;
    static_cast<Operation*>(tag)->Complete(ok);
  }
  RunPosted(/*last=*/true);
  t_running = outer;
}

}  // namespace cnp::grpc_asio
