// One completion queue and the thread that serves it, plus a standby thread for the long waits.
//
// Every event of a call comes back to the queue it was accepted on, and with gRPC's "poll"
// strategy the owning thread polls that queue's connections itself: a call's steps never wait
// for another thread to be woken. But the owner runs each call to the end, worker round trip
// included, and while it waits long - a slow function, or every worker busy - the other calls on
// its queue (and on its connections) would wait too. So a thread that announces a long wait
// (service/common/long_wait.h) has its standby thread poll the queue until the wait is over.
#pragma once

#include <thread>

#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "service/common/long_wait.h"

namespace cnp::rpc {

class QueueThread final : public LongWaitListener {
 public:
  explicit QueueThread(grpc::ServerCompletionQueue* cq);
  ~QueueThread() override;  // joins; the queue must have been shut down

  void LongWaitBegins() override;
  void LongWaitEnds() override;

 private:
  void Serve();
  void Stand();

  grpc::ServerCompletionQueue* const cq_;
  absl::Mutex mu_;
  int long_waits_ ABSL_GUARDED_BY(mu_) = 0;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::thread owner_;
  std::thread standby_;
};

}  // namespace cnp::rpc
