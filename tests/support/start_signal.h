// A FIFO a test's Python function writes one byte to when it starts running, so the test knows
// a call has reached its worker without sleeping: pass path() in the document, then Wait().
#pragma once

#include <string>

#include "absl/time/time.h"

namespace cnp::testing {

class StartSignal {
 public:
  StartSignal();
  ~StartSignal();
  StartSignal(const StartSignal&) = delete;
  StartSignal& operator=(const StartSignal&) = delete;

  const std::string& path() const { return path_; }
  // True once a function has written its byte, within `timeout`.
  bool Wait(absl::Duration timeout);

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace cnp::testing
