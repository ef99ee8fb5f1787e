// Where a test finds the files Bazel gives it (binaries, Python modules, test data), the same
// way under `bazel test`, `bazel run` and when a binary is run by hand from bazel-bin.
#pragma once

#include <string>

namespace cnp::testing {

// The runfiles tree: $TEST_SRCDIR under `bazel test`, $RUNFILES_DIR under `bazel run`,
// otherwise <this binary>.runfiles. A child process given RUNFILES_DIR=RunfilesDir() finds its
// own runfiles there too.
std::string RunfilesDir();

// A path inside this workspace's runfiles, e.g. Runfile("service/cnp-server").
std::string Runfile(const std::string& path);

}  // namespace cnp::testing
