#include "tests/security/transport/launched_server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/support/server_process.h"

namespace cnp::security_testing {

using ::cnp::testing::MakeTempDir;
using ::cnp::testing::Runfile;

std::string FunctionsDir() { return Runfile("tests/functions/server"); }

std::unique_ptr<LaunchedServer> LaunchedServer::Start(const LaunchOptions& options) {
  auto server = std::unique_ptr<LaunchedServer>(new LaunchedServer);
  server->log_path_ = MakeTempDir("server") + "/server.log";
  constexpr int kReadyFd = 5;
  std::vector<std::string> args = {Runfile("service/cnp-server"),
                                   "--worker-binary=" + Runfile("service/worker/cnp-worker"),
                                   "--workers=1", "--grpc-threads=2",
                                   "--python-path=" + FunctionsDir(),
                                   absl::StrCat("--ready-fd=", kReadyFd)};
  args.insert(args.end(), options.args.begin(), options.args.end());
  const int log =
      ::open(server->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return server;
  absl::StatusOr<pid_t> pid =
      ::cnp::testing::Spawn({.argv = std::move(args),
                             .env = {"RUNFILES_DIR=" + ::cnp::testing::RunfilesDir()},
                             .fds = {{STDERR_FILENO, log}, {kReadyFd, ready[1]}},
                             .umask = options.umask,
                             .open_files = options.open_files});
  ::close(log);
  ::close(ready[1]);
  if (!pid.ok()) {
    ::close(ready[0]);
    return server;
  }
  server->pid_ = *pid;
  char buffer[16];
  ssize_t n;
  while ((n = ::read(ready[0], buffer, sizeof buffer)) < 0 && errno == EINTR) {
  }
  ::close(ready[0]);
  server->ready_ = n > 0;
  return server;
}

LaunchedServer::~LaunchedServer() {
  if (!exited_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    WaitForExit();
  }
}

int LaunchedServer::WaitForExit() {
  if (exited_) return status_;
  status_ = ::cnp::testing::WaitForExit(pid_);
  exited_ = true;
  return status_;
}

int LaunchedServer::ExitCode() { return ::cnp::testing::ExitCode(WaitForExit()); }

std::string LaunchedServer::Log() const { return ::cnp::testing::ReadFile(log_path_); }

int LaunchedServer::Port(int n) const {
  const std::string log = Log();
  size_t at = 0;
  for (int i = 0; i <= n; ++i) {
    at = log.find("(port ", at);
    if (at == std::string::npos) return 0;
    at += 6;
  }
  int port = 0;
  return absl::SimpleAtoi(log.substr(at, log.find(')', at) - at), &port) ? port : 0;
}

absl::StatusOr<Certificates> MakeCertificates() {
  Certificates c;
  c.dir = MakeTempDir("certs");
  auto path = [&c](const char* name) { return absl::StrCat(c.dir, "/", name); };
  c.ca = path("ca.pem");
  c.server_cert = path("server.pem");
  c.server_key = path("server.key");
  c.client_cert = path("client.pem");
  c.client_key = path("client.key");
  c.other_ca = path("other-ca.pem");
  WriteFile(path("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n", 0644);
  const std::vector<std::vector<std::string>> steps = {
      {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
       "ca.pem", "-days", "1", "-subj", "/CN=cnp test CA"},
      {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other-ca.key",
       "-out", "other-ca.pem", "-days", "1", "-subj", "/CN=cnp other CA"},
      {"openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
       "server.csr", "-subj", "/CN=localhost"},
      {"openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
       "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "server.ext"},
      {"openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out",
       "client.csr", "-subj", "/CN=couchdb-node-1"},
      {"openssl", "x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
       "-CAcreateserial", "-out", "client.pem", "-days", "1"},
  };
  for (const auto& step : steps) {
    if (int rc = ::cnp::testing::RunToCompletion(step, c.dir); rc != 0) {
      return absl::InternalError(absl::StrCat(step[0], " ", step[1], " failed with ", rc));
    }
  }
  ::chmod(c.server_key.c_str(), 0600);
  ::chmod(c.client_key.c_str(), 0600);
  return c;
}

}  // namespace cnp::security_testing
