// A real cnp-server started by a test on a unix socket in the test's temporary directory, with
// real workers; stopped (SIGTERM) when the object goes away.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/lib/cnp_client.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"

namespace cnp::testing {

class ServerProcess {
 public:
  // Starts cnp-server with `args` (plus --listen on a fresh socket and the worker binary) and
  // waits until it answers.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(std::vector<std::string> args);
  // The same with other builds of the two programs (a benchmark's baseline build).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(std::vector<std::string> args,
                                                              const std::string& server_binary,
                                                              const std::string& worker_binary);
  ~ServerProcess();

  const std::string& target() const { return target_; }
  pid_t pid() const { return pid_; }
  std::unique_ptr<client::Client> Connect() const;

  // Sends `sig`; for SIGTERM, waits and returns the exit status.
  void Signal(int sig) const;
  int WaitForExit();
  // The server's log so far.
  std::string Log() const;
  // Waits until the log holds `needle` (woken by inotify as the log grows); false on timeout.
  bool WaitForLog(const std::string& needle, absl::Duration timeout) const;

 private:
  pid_t pid_ = -1;
  std::string target_;
  std::string log_path_;
  bool exited_ = false;
  int status_ = 0;
};

}  // namespace cnp::testing
