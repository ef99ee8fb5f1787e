// A worker kept between one owner's calls (AsyncTaskRunner::RunAndKeep): a CouchDB Session
// stream's lines. Calls that come one after another with little time between them then skip
// the pool's queue, and a reply that comes quickly is read on the owner's own thread
// (AsyncWorkerLease::Exchange): no trip through the pool's thread.
//
// It is kept only while nobody else needs it. When the pool asks for it back (another caller
// waits for a worker, a batch could use it, a reload or the memory cap wants it replaced), it is
// given back at once, or as soon as the exchange in progress, or the call keeping it, ends. A
// session runs one call at a time; should an owner run several at once, a call that comes while
// the kept worker is busy goes through the pool like any call.
//
// One executor only, the owner's: construct, Run, LetGo and destroy there. Destroy it only when
// no Run is in progress.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "service/pool/async_task_runner.h"

namespace cnp::pool {

class KeptWorker {
 public:
  KeptWorker(AsyncTaskRunner& runner, asio::any_io_executor executor)
      : runner_(runner), executor_(std::move(executor)) {}
  ~KeptWorker() {
    if (link_ != nullptr) link_->owner = nullptr;
  }
  KeptWorker(const KeptWorker&) = delete;
  KeptWorker& operator=(const KeptWorker&) = delete;

  // Runs `task` on the kept worker when there is one and it is free; otherwise through the
  // pool, keeping the worker that answers when none is kept (and the pool can spare it). What
  // it returns is AsyncTaskRunner::Run's. `task` is copied once, for whichever worker runs it:
  // it must stay alive until the call completes. `logs`, if not null, is handed the task's
  // log() lines as its function makes them, and moves its deadline
  // (AsyncWorkerLease::ExchangeForwardingLogs), on the kept worker or one the pool gives; a
  // call that goes through the pool without keeping (one comes while another runs) has its
  // lines come with its answer.
  asio::awaitable<absl::StatusOr<Reply>> Run(const Task& task, absl::Time deadline,
                                             TaskLogListener* logs = nullptr);

  // Gives the kept worker back to the pool: now, or after the exchange or keeping call in
  // progress.
  void LetGo();

  bool holds_worker() const { return kept_ != nullptr; }

 private:
  // The pool's request to give the worker back is posted to the owner's executor; `owner` is
  // cleared there when the worker is let go or the owner goes away, so a late request does
  // nothing.
  struct Link {
    KeptWorker* owner;
  };

  AsyncTaskRunner& runner_;
  const asio::any_io_executor executor_;
  std::unique_ptr<AsyncWorkerLease> kept_;
  std::shared_ptr<Link> link_;  // kept_'s
  bool exchanging_ = false;     // a call is using kept_
  bool keeping_ = false;        // a RunAndKeep is on its way: the others run without keeping
  bool give_back_ = false;      // asked for while exchanging_ or keeping_
};

}  // namespace cnp::pool
