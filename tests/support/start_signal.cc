#include "tests/support/start_signal.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>

#include "absl/time/clock.h"
#include "tests/support/files.h"

namespace cnp::testing {

StartSignal::StartSignal() : path_(MakeTempDir("signal") + "/started") {
  if (::mkfifo(path_.c_str(), 0600) != 0) return;
  // Open for reading first (non-blocking), so the function's open for writing succeeds.
  fd_ = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
}

StartSignal::~StartSignal() {
  if (fd_ >= 0) ::close(fd_);
}

bool StartSignal::Wait(absl::Duration timeout) {
  if (fd_ < 0) return false;
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    char byte;
    if (::read(fd_, &byte, 1) == 1) return true;
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) return false;
    pollfd ready{fd_, POLLIN, 0};
    ::poll(&ready, 1, static_cast<int>(left));
  }
}

}  // namespace cnp::testing
