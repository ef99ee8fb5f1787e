#include "tests/support/stderr_lines.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace cnp::testing {

std::vector<std::string> StderrLinesOf(const std::function<void()>& write) {
  // A file in memory, not a pipe: `write` runs on this thread with nothing reading meanwhile,
  // and a pipe would block it at 64 KiB.
  const int file = ::memfd_create("stderr", MFD_CLOEXEC);
  EXPECT_GE(file, 0);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(file, STDERR_FILENO);
  write();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::string text;
  char buffer[1 << 16];
  ssize_t n;
  ::lseek(file, 0, SEEK_SET);
  while ((n = ::read(file, buffer, sizeof buffer)) > 0) text.append(buffer, n);
  ::close(file);
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

}  // namespace cnp::testing
