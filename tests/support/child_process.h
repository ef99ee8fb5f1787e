// A helper process a test starts (a server), whose output is collected on a thread so that it
// never blocks on a full pipe, and which is killed when the test is done with it.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tests/support/files.h"
#include "tests/support/spawn.h"

namespace cnp::testing {

class ChildProcess {
 public:
  // Runs `argv` (argv[0] looked up on PATH) in `work_dir` and returns once its output (stdout
  // and stderr together) contains `ready_text`; fails with that output if it exits first or
  // `timeout` passes.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::vector<std::string>& argv,
                                                             const std::string& work_dir,
                                                             const std::string& ready_text,
                                                             absl::Duration timeout);
  // SIGTERM, then waits for it.
  ~ChildProcess();

  std::string output() const;
  pid_t pid() const { return pid_; }
  // Waits until the output contains `text`; false if the process ended or time ran out first.
  bool WaitForOutput(const std::string& text, absl::Duration timeout);
  // Waits until it has exited (its output ended) and returns its exit code (spawn.h's
  // ExitCode); nullopt if it is still running after `timeout` (it is then left running).
  std::optional<int> WaitForExitCode(absl::Duration timeout);

 private:
  ChildProcess() = default;
  void Drain(int fd);

  pid_t pid_ = -1;
  std::thread drainer_;
  mutable absl::Mutex mu_;
  std::string output_ ABSL_GUARDED_BY(mu_);
  bool exited_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace cnp::testing
