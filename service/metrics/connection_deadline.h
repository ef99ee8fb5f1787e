// Closes every connection to the metrics endpoint that has not sent its request within a short
// deadline, or not been answered within a longer one, whatever it has sent. libmicrohttpd's own
// timeout counts silence only: a client that sends one byte a second is never silent for long,
// and 64 such clients (any local user can connect) held every connection slot for as long as
// they liked, while a scraper's connection waited behind them. A scraper sends its request as
// it connects and is answered in milliseconds, so a connection still without its request after
// a second is not a scraper's: the slots a flood holds come back every second, not every five
// (200 clients that reconnected at once kept a scraper waiting 14 s behind 5 s deadlines).
//
// libmicrohttpd 0.9.75 has no such deadline, nor a way to close a connection from outside its
// thread: the connections are registered as they start, are answered and end
// (MHD_OPTION_NOTIFY_CONNECTION, the access handler), and a thread of this class shuts an old
// one's socket down (shutdown(2), not close: the socket stays libmicrohttpd's), which
// libmicrohttpd sees as the client hanging up and closes it.
#pragma once

#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace cnp::metrics {

class ConnectionDeadline {
 public:
  // Starts the thread that closes connections without their request `request_deadline` after
  // they started, or not answered `answer_deadline` after their request came, looking every
  // `sweep`.
  ConnectionDeadline(absl::Duration request_deadline, absl::Duration answer_deadline,
                     absl::Duration sweep);
  ConnectionDeadline(const ConnectionDeadline&) = delete;
  ConnectionDeadline& operator=(const ConnectionDeadline&) = delete;
  // Stops the thread (within a sweep's wait, at once).
  ~ConnectionDeadline();

  // From libmicrohttpd's thread: a connection on socket `fd` has started, or has ended (called
  // before libmicrohttpd closes `fd`, so the sweep never shuts down a descriptor reused since).
  void Started(int fd);
  void Ended(int fd);
  // From libmicrohttpd's thread: the connection on socket `fd` has sent its request.
  void Requested(int fd);

 private:
  void Sweep();

  const absl::Duration request_deadline_;
  const absl::Duration answer_deadline_;
  const absl::Duration sweep_;
  absl::Mutex mu_;
  // Each open connection's socket and when it is closed; held while a socket is shut down, so
  // that libmicrohttpd cannot close it (Ended waits) meanwhile.
  std::map<int, absl::Time> deadlines_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread sweeper_;
};

}  // namespace cnp::metrics
