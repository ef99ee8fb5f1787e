// SIGINT and SIGTERM, while a long call runs (a staged upload waits for CouchDB for minutes or
// hours), cancel the call instead of ending the process at once: the command can then say what
// the cancelled work left behind (a staging document kept, or deleted by cnp-server). A second
// signal ends the process as if there were no handler, for a user who will not wait.
#pragma once

#include <atomic>
#include <csignal>
#include <thread>

#include "grpcpp/client_context.h"

namespace cnp::client::upload {

class CallInterrupter {
 public:
  // Only one at a time: the signals' handlers are the process's.
  explicit CallInterrupter(grpc::ClientContext& context);
  ~CallInterrupter();  // the handlers the process had are back
  CallInterrupter(const CallInterrupter&) = delete;
  CallInterrupter& operator=(const CallInterrupter&) = delete;

  // The signal that cancelled the call, or 0.
  int signal() const { return signal_.load(); }

 private:
  void Watch(grpc::ClientContext& context);

  int pipe_[2] = {-1, -1};  // the handler writes the signal's number; 0 ends the watch
  struct sigaction previous_int_ {};
  struct sigaction previous_term_ {};
  std::atomic<int> signal_{0};
  std::thread watcher_;
};

}  // namespace cnp::client::upload
