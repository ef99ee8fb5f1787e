// A thread about to wait for a long time - for a worker that is still computing, or for a free
// worker - says so, so that whoever relies on that thread can make other arrangements. The
// gRPC polling threads use it to hand their completion queue to a standby thread meanwhile
// (see service/rpc/queue_relief.h); other threads have no listener and nothing happens.
#pragma once

namespace cnp {

class LongWaitListener {
 public:
  virtual ~LongWaitListener() = default;
  virtual void LongWaitBegins() = 0;
  virtual void LongWaitEnds() = 0;
};

// The listener of the calling thread (none by default).
void SetLongWaitListener(LongWaitListener* listener);

// Marks the scope of a long wait on this thread.
class LongWait {
 public:
  LongWait();
  ~LongWait();
  LongWait(const LongWait&) = delete;
  LongWait& operator=(const LongWait&) = delete;

 private:
  LongWaitListener* listener_;
};

}  // namespace cnp
