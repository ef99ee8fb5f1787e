// cnp-server started the way a security test needs: its own listen addresses and flags, a
// chosen umask or open-files limit, its log kept, and a start that may fail (then its exit
// code and log say why). Also the TLS material of the tests, made with openssl at test time.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/support/files.h"
#include "tests/support/spawn.h"

namespace cnp::security_testing {

struct LaunchOptions {
  std::vector<std::string> args;  // besides the worker binary, --workers=1 and --python-path
  mode_t umask = 022;
  rlim_t open_files = 0;          // > 0: RLIMIT_NOFILE (soft and hard) of the server
};

class LaunchedServer {
 public:
  // Waits until the server is ready (--ready-fd) or has exited.
  static std::unique_ptr<LaunchedServer> Start(const LaunchOptions& options);
  ~LaunchedServer();  // SIGKILL if still running

  bool ready() const { return ready_; }
  // The exit status (waitpid's) once it exited; waits for it.
  int WaitForExit();
  // The exit code of a server that exited by itself.
  int ExitCode();
  std::string Log() const;
  // The port of the n-th "listening on ... (port N)" line.
  int Port(int n = 0) const;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  bool ready_ = false;
  bool exited_ = false;
  int status_ = 0;
  std::string log_path_;
};

// ca.pem; server.pem/server.key for 127.0.0.1 and localhost; client.pem/client.key; all
// signed by ca. other-ca.pem: a CA that signed nothing here.
struct Certificates {
  std::string dir;
  std::string ca, server_cert, server_key, client_cert, client_key, other_ca;
};
absl::StatusOr<Certificates> MakeCertificates();

std::string FunctionsDir();

// The shared test support these tests use with the helpers above.
using ::cnp::testing::ProcessResult;
using ::cnp::testing::RunWithInput;
using ::cnp::testing::ShortTempDir;
using ::cnp::testing::WriteFile;

}  // namespace cnp::security_testing
