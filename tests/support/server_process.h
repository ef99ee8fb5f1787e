// A real cnp-server started by a test, with real workers: by default on a fresh unix socket in
// the test's temporary directory; or as a security test needs it, with its own listen addresses
// and flags, a chosen umask or open-files limit, and a start that may fail (then its exit code
// and log say why). Killed (SIGKILL) when the object goes away, unless it has exited.
#pragma once

#include <sys/resource.h>
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

struct ServerOptions {
  std::vector<std::string> args;  // besides --worker-binary and --ready-fd
  // Adds --listen on a fresh unix socket (target()). False when `args`, or a --config file
  // they name, say where the server listens.
  bool fresh_socket = true;
  std::string work_dir;  // empty: the test's
  mode_t umask = 022;
  rlim_t open_files = 0;  // > 0: the server's RLIMIT_NOFILE, soft and hard
  bool own_process_group = false;  // see SpawnOptions
  std::string server_binary;  // empty: this build's cnp-server
  std::string worker_binary;  // empty: this build's cnp-worker
};

class ServerProcess {
 public:
  // Starts cnp-server and waits until it is ready (--ready-fd) or has exited. A server that
  // refuses to start is no failure here: ready() is false, and ExitCode() and Log() say why.
  static std::unique_ptr<ServerProcess> Launch(ServerOptions options);

  // Starts cnp-server with `args` (plus --listen on a fresh socket and the worker binary) and
  // waits until it answers; an error, with its log, if it does not come up.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(std::vector<std::string> args);
  // The same with other builds of the two programs (a benchmark's baseline build).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(std::vector<std::string> args,
                                                              const std::string& server_binary,
                                                              const std::string& worker_binary);
  // A test's usual server: Start with `workers` workers (0: the server's default), a
  // --python-path for each of `function_dirs` (a runfiles path such as
  // "tests/functions/server", or an absolute directory the test made), then `extra`. A server
  // that does not come up fails the test (non-fatally, with its log) and gives nullptr, which
  // the test asserts against.
  static std::unique_ptr<ServerProcess> StartWithFunctions(
      const std::vector<std::string>& function_dirs, int workers,
      const std::vector<std::string>& extra = {});
  ~ServerProcess();

  bool ready() const { return ready_; }
  // The fresh socket's target ("unix:/..."); empty when the options said where to listen.
  const std::string& target() const { return target_; }
  pid_t pid() const { return pid_; }
  std::unique_ptr<client::Client> Connect() const;

  // Sends `sig`; for SIGTERM, waits and returns the exit status.
  void Signal(int sig) const;
  // The exit status (waitpid's); waits for the exit.
  int WaitForExit();
  // The exit code of a server that exits by itself; waits for it.
  int ExitCode();
  // The port of the n-th "listening on ... (port N)" line of the log (a --listen=HOST:0); 0
  // when there is none.
  int Port(int n = 0) const;
  // The server's log so far, and the file it is written to (the server's stderr).
  std::string Log() const;
  const std::string& log_path() const { return log_path_; }
  // Waits until the log holds `needle` (woken by inotify as the log grows); false on timeout.
  bool WaitForLog(const std::string& needle, absl::Duration timeout) const;

 private:
  pid_t pid_ = -1;
  bool ready_ = false;
  std::string target_;
  std::string log_path_;
  bool exited_ = false;
  int status_ = 0;
};

}  // namespace cnp::testing
