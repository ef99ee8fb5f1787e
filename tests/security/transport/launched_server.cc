#include "tests/security/transport/launched_server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/support/server_process.h"

namespace cnp::security_testing {

using ::cnp::testing::MakeTempDir;
using ::cnp::testing::Runfile;

std::string FunctionsDir() { return Runfile("tests/service/pyfns"); }

namespace {

// The short directories live outside TEST_TMPDIR, which Bazel would clean: removed at exit.
class ShortDirs {
 public:
  ~ShortDirs() {
    std::error_code ignored;
    for (const std::string& dir : dirs_) std::filesystem::remove_all(dir, ignored);
  }
  void Add(const std::string& dir) { dirs_.push_back(dir); }

 private:
  std::vector<std::string> dirs_;
};

}  // namespace

std::string ShortTempDir() {
  static ShortDirs* const dirs = new ShortDirs;
  static const int registered = std::atexit([] { delete dirs; });
  (void)registered;
  char dir[] = "/tmp/cnp-sec-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return std::string();
  dirs->Add(dir);
  return dir;
}

void WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream(path, std::ios::trunc) << text;
  ::chmod(path.c_str(), mode);
}

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
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string runfiles = absl::StrCat("RUNFILES_DIR=", Runfile(""));
  runfiles.resize(runfiles.size() - 5);  // without the trailing "/cnp/"
  const int log =
      ::open(server->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return server;
  const rlimit files{options.open_files, options.open_files};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(log, STDERR_FILENO);
    if (ready[1] != kReadyFd) ::dup2(ready[1], kReadyFd);
    ::fcntl(kReadyFd, F_SETFD, 0);
    ::putenv(runfiles.data());
    ::umask(options.umask);
    if (options.open_files > 0) ::setrlimit(RLIMIT_NOFILE, &files);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log);
  ::close(ready[1]);
  server->pid_ = pid;
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
  while (::waitpid(pid_, &status_, 0) < 0 && errno == EINTR) {
  }
  exited_ = true;
  return status_;
}

int LaunchedServer::ExitCode() {
  const int status = WaitForExit();
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string LaunchedServer::Log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

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

int Run(const std::vector<std::string>& argv, const std::string& dir) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
    if (!dir.empty() && ::chdir(dir.c_str()) != 0) ::_exit(126);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
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
    if (int rc = Run(step, c.dir); rc != 0) {
      return absl::InternalError(absl::StrCat(step[0], " ", step[1], " failed with ", rc));
    }
  }
  ::chmod(c.server_key.c_str(), 0600);
  ::chmod(c.client_key.c_str(), 0600);
  return c;
}

ProcessResult RunWithInput(const std::vector<std::string>& argv, const std::string& input) {
  ProcessResult result;
  const std::string dir = MakeTempDir("run");
  const std::string in_path = dir + "/stdin";
  const std::string out_path = dir + "/stdout";
  const std::string err_path = dir + "/stderr";
  WriteFile(in_path, input);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int in = ::open(in_path.c_str(), O_RDONLY | O_CLOEXEC);
  const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in, STDIN_FILENO);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(err, STDERR_FILENO);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(in);
  ::close(out);
  ::close(err);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const std::string& path) {
    std::ifstream file(path);
    std::stringstream s;
    s << file.rdbuf();
    return s.str();
  };
  result.out = slurp(out_path);
  result.err = slurp(err_path);
  return result;
}

}  // namespace cnp::security_testing
