// Temporary directories and small files for tests.
#pragma once

#include <sys/types.h>

#include <string>

namespace cnp::testing {

// A fresh directory under $TEST_TMPDIR (Bazel removes it after the test), e.g.
// MakeTempDir("config") -> $TEST_TMPDIR/configXXXXXX; empty if it could not be made.
std::string MakeTempDir(const std::string& prefix);

// A fresh directory directly under /tmp, mode 0700, removed when the test process exits: a unix
// socket's path must fit in 108 bytes, which a path under $TEST_TMPDIR may not.
std::string ShortTempDir();

// Replaces `path`'s contents with `text` and sets its mode.
void WriteFile(const std::string& path, const std::string& text, mode_t mode = 0600);
// The whole file; empty if it cannot be read.
std::string ReadFile(const std::string& path);

}  // namespace cnp::testing
