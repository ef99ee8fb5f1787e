// What the calls of one server share so that it can shut down promptly: how many calls are
// still running, and which streams to end.
//
// (That no operation is started on a completion queue that has been shut down, which gRPC
// answers by aborting the process, is the GrpcContext's part: see grpc_asio/grpc_context.h.)
//
// Each method asks gRPC for its calls one at a time (the next once one has come), and gRPC
// cancels, when the server shuts down, the calls that have arrived and wait for the method to
// ask for them: CANCELLED, which a client does not retry. So every method registers how to ask
// for one more call, and the shutdown first asks for many on every context (rpc_server.cc).
//
// Streams (the CouchDB session, MapStream) wait for their client's next message for as long as
// the client likes; one idle stream would hold every shutdown for the whole grace. They register
// here, and Drain() ends the idle ones at once and has the busy ones end after their current
// message.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace cnp::grpc_asio {
class GrpcContext;
}

namespace cnp::rpc {

class DrainableStream {
 public:
  // Ends the stream now if it waits for its client, else after the message it is handling.
  // Called from the thread that shuts the server down.
  virtual void Drain() = 0;

 protected:
  ~DrainableStream() = default;
};

class ShutdownGate {
 public:
  // A call accepted and not yet over: the ones shutdown waits for.
  void CallBegins() {
    absl::MutexLock lock(&calls_mu_);
    ++calls_;
  }
  void CallEnds() {
    absl::MutexLock lock(&calls_mu_);
    --calls_;
  }
  bool HasCalls() {
    absl::MutexLock lock(&calls_mu_);
    return calls_ > 0;
  }
  // Waits until no call is left; false when the deadline came first.
  bool AwaitNoCalls(absl::Time deadline) {
    absl::MutexLock lock(&calls_mu_);
    auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(calls_mu_) { return calls_ == 0; };
    return calls_mu_.AwaitWithDeadline(absl::Condition(&none), deadline);
  }

  // How a method asks gRPC for one more call; called only on `context`'s thread. Register
  // before the server runs.
  void AddListener(const grpc_asio::GrpcContext& context, std::function<void()> ask_for_call) {
    absl::MutexLock lock(&listeners_mu_);
    listeners_[&context].push_back(std::move(ask_for_call));
  }
  std::vector<std::function<void()>> ListenersOf(const grpc_asio::GrpcContext& context) {
    absl::MutexLock lock(&listeners_mu_);
    auto found = listeners_.find(&context);
    return found == listeners_.end() ? std::vector<std::function<void()>>() : found->second;
  }

  // A live stream. False when draining has begun: the stream should end at once.
  bool AddStream(DrainableStream* stream) {
    absl::MutexLock lock(&streams_mu_);
    if (draining_) return false;
    streams_.insert(stream);
    return true;
  }
  void RemoveStream(DrainableStream* stream) {
    absl::MutexLock lock(&streams_mu_);
    streams_.erase(stream);
  }
  // Drains every live stream, and every stream that registers from now on.
  void DrainStreams() {
    absl::MutexLock lock(&streams_mu_);
    draining_ = true;
    // Under the lock, so that no stream is deleted while it is told.
    for (DrainableStream* stream : streams_) stream->Drain();
  }

 private:
  absl::Mutex calls_mu_;
  int calls_ ABSL_GUARDED_BY(calls_mu_) = 0;
  absl::Mutex listeners_mu_;
  std::map<const grpc_asio::GrpcContext*, std::vector<std::function<void()>>> listeners_
      ABSL_GUARDED_BY(listeners_mu_);
  absl::Mutex streams_mu_;
  bool draining_ ABSL_GUARDED_BY(streams_mu_) = false;
  std::set<DrainableStream*> streams_ ABSL_GUARDED_BY(streams_mu_);
};

// Counts one call for as long as it lives.
class CountedCall {
 public:
  explicit CountedCall(ShutdownGate& gate) : gate_(gate) { gate_.CallBegins(); }
  ~CountedCall() { gate_.CallEnds(); }
  CountedCall(const CountedCall&) = delete;
  CountedCall& operator=(const CountedCall&) = delete;

 private:
  ShutdownGate& gate_;
};

}  // namespace cnp::rpc
