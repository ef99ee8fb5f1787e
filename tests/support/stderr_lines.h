// What code writes to stderr, as lines: for tests of the log, which writes there.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace cnp::testing {

// Runs `write` with stderr sent to a file in memory; the lines it wrote.
std::vector<std::string> StderrLinesOf(const std::function<void()>& write);

}  // namespace cnp::testing
