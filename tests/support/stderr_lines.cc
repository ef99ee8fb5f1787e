#include "tests/support/stderr_lines.h"

#include <fcntl.h>
#include <unistd.h>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace cnp::testing {

std::vector<std::string> StderrLinesOf(const std::function<void()>& write) {
  int pipe[2];
  EXPECT_EQ(::pipe2(pipe, O_CLOEXEC), 0);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(pipe[1], STDERR_FILENO);
  write();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ::close(pipe[1]);
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(pipe[0], buffer, sizeof buffer)) > 0) text.append(buffer, n);
  ::close(pipe[0]);
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

}  // namespace cnp::testing
