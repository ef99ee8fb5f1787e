// What code writes to stderr, as lines: for tests of the log, which writes there.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace cnp::testing {

// Runs `write` with stderr sent to a pipe; the lines it wrote. What fits in the pipe's buffer
// (64 KiB) only: `write` runs on this thread, with nothing reading the pipe meanwhile.
std::vector<std::string> StderrLinesOf(const std::function<void()>& write);

}  // namespace cnp::testing
