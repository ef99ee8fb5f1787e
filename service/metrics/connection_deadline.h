// Closes every connection to the metrics endpoint that has been open for longer than a deadline,
// whatever it has sent. libmicrohttpd's own timeout counts silence only: a client that sends one
// byte a second is never silent for long, and 64 such clients (any local user can connect) held
// every connection slot for as long as they liked, while a scraper's connection waited behind
// them. A scrape takes milliseconds, so a connection this old is not a scraper's.
//
// libmicrohttpd 0.9.75 has no such deadline, nor a way to close a connection from outside its
// thread: the connections are registered as they start and end (MHD_OPTION_NOTIFY_CONNECTION),
// and a thread of this class shuts an old one's socket down (shutdown(2), not close: the socket
// stays libmicrohttpd's), which libmicrohttpd sees as the client hanging up and closes it.
#pragma once

#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace cnp::metrics {

class ConnectionDeadline {
 public:
  // Starts the thread that closes connections older than `deadline`, looking every `sweep`.
  ConnectionDeadline(absl::Duration deadline, absl::Duration sweep);
  ConnectionDeadline(const ConnectionDeadline&) = delete;
  ConnectionDeadline& operator=(const ConnectionDeadline&) = delete;
  // Stops the thread (within a sweep's wait, at once).
  ~ConnectionDeadline();

  // From libmicrohttpd's thread: a connection on socket `fd` has started, or has ended (called
  // before libmicrohttpd closes `fd`, so the sweep never shuts down a descriptor reused since).
  void Started(int fd);
  void Ended(int fd);

 private:
  void Sweep();

  const absl::Duration deadline_;
  const absl::Duration sweep_;
  absl::Mutex mu_;
  // Each open connection's socket and when it started; held while a socket is shut down, so
  // that libmicrohttpd cannot close it (Ended waits) meanwhile.
  std::map<int, absl::Time> started_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread sweeper_;
};

}  // namespace cnp::metrics
