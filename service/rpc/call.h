// The tags of gRPC's async API. Every pending operation on the completion queue is a Call (or
// a step of one); the thread that takes its event from the queue runs Proceed(), and with it
// the request's work, so a request never waits for another thread to be woken.
#pragma once

namespace cnp::rpc {

class Call {
 public:
  virtual ~Call() = default;
  // `ok` is gRPC's: false when the operation failed (client gone, server shutting down).
  virtual void Proceed(bool ok) = 0;
};

}  // namespace cnp::rpc
