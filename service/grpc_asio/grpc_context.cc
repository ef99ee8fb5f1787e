#include "service/grpc_asio/grpc_context.h"

#include <chrono>
#include <thread>

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
  if (here || !sleeping_ || shut_down_) return;
  int idle = kIdle;
  if (!alarm_state_.compare_exchange_strong(idle, kSetting)) return;  // one is in flight
  setters_.fetch_add(1);
  lock.Release();
  SetAlarm();
}

void GrpcContext::SetAlarm() {
  for (bool again = true; again;) {
    alarm_.Set(queue_.get(), std::chrono::system_clock::time_point(), &wakeup_);
    int setting = kSetting;
    if (alarm_state_.compare_exchange_strong(setting, kSet)) break;  // Complete frees it
    // It fired before Set returned, so it is ours to free. Work posted meanwhile by someone who
    // saw it in flight may find the loop asleep again: then it is set once more.
    alarm_state_ = kIdle;
    absl::MutexLock lock(&mu_);
    int idle = kIdle;
    again = !posted_.empty() && sleeping_ && !shut_down_ &&
            alarm_state_.compare_exchange_strong(idle, kSetting);
  }
  // The last touch of the context: Shutdown waits for it, so the context may go after.
  setters_.fetch_sub(1);
}

void GrpcContext::Wakeup::Complete(bool) {
  // Its setter may move kSetting to kSet between two looks here, so look until one holds.
  int state = context_.alarm_state_;
  for (;;) {
    if (state == kSet) {
      if (context_.alarm_state_.compare_exchange_weak(state, kIdle)) return;
    } else if (state == kSetting) {
      if (context_.alarm_state_.compare_exchange_weak(state, kFiredEarly)) return;
    } else {
      return;  // not in flight: nothing of ours fired
    }
  }
}

void GrpcContext::Shutdown() {
  Post([this] {
    if (closed_) return;
    closed_ = true;
    {
      absl::MutexLock lock(&mu_);
      shut_down_ = true;  // no poster claims the alarm from now on
    }
    // An alarm set on a queue already shut down aborts the process, and a poster still in
    // SetAlarm would touch the context after Run returned: each is let finish first
    // (microseconds; none sets a further alarm once it sees shut_down_).
    while (setters_ != 0) std::this_thread::yield();
    queue_->Shutdown();
  });
}

bool GrpcContext::RunPosted(bool last) {
  bool ran = false;
  std::vector<absl::AnyInvocable<void() &&>> batch;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (posted_.empty()) {
        finished_ = last;
        sleeping_ = !last;  // decided with the queue seen empty, under the same lock
        return ran;
      }
      batch.swap(posted_);
    }
    for (auto& work : batch) std::move(work)();
    batch.clear();
    ran = true;
  }
}

void GrpcContext::Run() {
  const GrpcContext* outer = t_running;
  t_running = this;
  void* tag;
  bool ok;
  for (;;) {
    RunPosted();
    const bool got = queue_->Next(&tag, &ok);
    sleeping_ = false;
    if (!got) break;
    static_cast<Operation*>(tag)->Complete(ok);
  }
  RunPosted(/*last=*/true);
  t_running = outer;
}

}  // namespace cnp::grpc_asio
