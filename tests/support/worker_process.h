// A real cnp-worker, started over a socketpair the way cnp-server starts it, for tests.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/support/runfiles.h"
#include "worker.pb.h"

namespace cnp::worker::testing {

using ::cnp::testing::Runfile;

using ::cnp::worker::v1::Reply;
using ::cnp::worker::v1::Task;

// The directory that holds the test modules (tests/functions), for --python-path.
std::string FunctionsDir();

// " (worker_design.py:37 in show_crashes)": where a test module raised, as the worker appends it
// to an exception's message. The line is the one of `file` (in FunctionsDir()) that holds
// `line_text`, found when the test runs, so that the tests follow edits of the modules.
std::string RaisedAt(const std::string& file, const std::string& line_text,
                     const std::string& function);

class WorkerProcess {
 public:
  // Starts cnp-worker --fd=3 <args>, with `env` ("NAME=value") added to the environment.
  // Its stderr goes to a file (see ReadStderr). `binary`: another build's cnp-worker (with its
  // runfiles next to it), for a benchmark's baseline; empty for this build's.
  static absl::StatusOr<std::unique_ptr<WorkerProcess>> Start(std::vector<std::string> args,
                                                              std::vector<std::string> env = {},
                                                              std::string binary = "");
  // Starts it with --python-path=FunctionsDir() plus `args`.
  static std::unique_ptr<WorkerProcess> StartWithFunctions(std::vector<std::string> args = {});
  ~WorkerProcess();

  absl::Status Send(const Task& task);
  // Send with descriptors attached to the frame (a DirectSession's pipes); they stay open here.
  absl::Status SendWithDescriptors(const Task& task, const std::vector<int>& fds);
  absl::StatusOr<Reply> Receive();
  // Send, then Receive; fails the test (and returns an empty Reply) on a socket error.
  Reply Call(const Task& task);

  // Closes the socket and waits for the worker to exit; returns its exit status.
  int CloseAndWait();
  std::string ReadStderr() const;
  pid_t pid() const { return pid_; }

 private:
  WorkerProcess(pid_t pid, int fd, std::string stderr_path)
      : pid_(pid), fd_(fd), stderr_path_(std::move(stderr_path)) {}

  pid_t pid_;
  int fd_;
  std::string stderr_path_;
};

// Task builders.
Task MapTask(std::vector<std::string> functions, std::vector<std::string> docs);
Task ReduceTask(std::vector<std::string> functions, std::string kvs, bool rereduce);
Task DesignTask(cnp::v1::DesignFunctionKind kind, std::string function, std::string args);
Task ResolveTask(std::vector<std::string> functions);

}  // namespace cnp::worker::testing
