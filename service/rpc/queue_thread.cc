#include "service/rpc/queue_thread.h"

#include <chrono>

#include "service/rpc/call.h"

namespace cnp::rpc {

QueueThread::QueueThread(grpc::ServerCompletionQueue* cq)
    : cq_(cq), owner_([this] { Serve(); }), standby_([this] { Stand(); }) {}

QueueThread::~QueueThread() {
  owner_.join();
  standby_.join();
}

void QueueThread::LongWaitBegins() {
  absl::MutexLock lock(&mu_);
  ++long_waits_;
}

void QueueThread::LongWaitEnds() {
  absl::MutexLock lock(&mu_);
  --long_waits_;
}

void QueueThread::Serve() {
  SetLongWaitListener(this);
  void* tag;
  bool ok;
  while (cq_->Next(&tag, &ok)) static_cast<Call*>(tag)->Proceed(ok);
  absl::MutexLock lock(&mu_);
  done_ = true;
}

void QueueThread::Stand() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](QueueThread* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return self->long_waits_ > 0 || self->done_;
          },
          this));
      if (done_) return;
    }
    // Poll in short slices so as to stand down soon after the owner is back.
    void* tag;
    bool ok;
    switch (cq_->AsyncNext(&tag, &ok, std::chrono::system_clock::now() + std::chrono::milliseconds(20))) {
      case grpc::CompletionQueue::GOT_EVENT:
        static_cast<Call*>(tag)->Proceed(ok);
        break;
      case grpc::CompletionQueue::SHUTDOWN: {
        absl::MutexLock lock(&mu_);
        done_ = true;
        return;
      }
      case grpc::CompletionQueue::TIMEOUT:
        break;
    }
  }
}

}  // namespace cnp::rpc
