#include "tests/upload/pouchdb_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace cnp::upload::testing {
namespace {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

// The pouchdb-server script: $CNP_POUCHDB_SERVER, or node_modules next to the package.json
// this test has in its runfiles (a symlink into the source tree).
absl::StatusOr<std::string> FindServerScript() {
  if (std::string env = Env("CNP_POUCHDB_SERVER"); !env.empty()) return env;
  std::string runfile = absl::StrCat(Env("TEST_SRCDIR"), "/", Env("TEST_WORKSPACE"),
                                     "/tests/upload/package.json");
  std::error_code error;
  std::filesystem::path source = std::filesystem::canonical(runfile, error);
  if (!error) {
    std::filesystem::path script =
        source.parent_path() / "node_modules/pouchdb-server/bin/pouchdb-server";
    if (std::filesystem::exists(script)) return script.string();
  }
  return absl::FailedPreconditionError(
      "pouchdb-server is not installed: run tests/upload/install_pouchdb_server.sh (or set "
      "CNP_POUCHDB_SERVER to its bin/pouchdb-server)");
}

}  // namespace

int UnusedLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

absl::StatusOr<std::unique_ptr<PouchDbServer>> PouchDbServer::Start() {
  absl::StatusOr<std::string> script = FindServerScript();
  if (!script.ok()) return script.status();

  std::unique_ptr<PouchDbServer> server(new PouchDbServer());
  // It writes config.json and log.txt into its working directory.
  std::string tmp = Env("TEST_TMPDIR").empty() ? "/tmp" : Env("TEST_TMPDIR");
  std::string pattern = tmp + "/pouchdb.XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  }
  server->work_dir_ = pattern;
  server->port_ = UnusedLoopbackPort();
  std::string port = std::to_string(server->port_);

  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(out[1], STDERR_FILENO);
    if (::chdir(server->work_dir_.c_str()) != 0) ::_exit(126);
    ::execlp("node", "node", script->c_str(), "--in-memory", "-o", "127.0.0.1", "-p",
             port.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  server->pid_ = pid;
  server->drainer_ = std::thread([s = server.get(), fd = out[0]] { s->Drain(fd); });

  absl::MutexLock lock(&server->mu_);
  auto ready = [s = server.get()]() ABSL_SHARED_LOCKS_REQUIRED(s->mu_) {
    return s->started_ || s->exited_;
  };
  server->mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Seconds(60));
  if (!server->started_) {
    return absl::UnavailableError(
        absl::StrCat("pouchdb-server did not start; it printed:\n", server->output_));
  }
  return server;
}

void PouchDbServer::Drain(int fd) {
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    absl::MutexLock lock(&mu_);
    if (n <= 0) {
      exited_ = true;
      break;
    }
    output_.append(buffer, n);
    if (absl::StrContains(output_, "has started on")) started_ = true;
  }
  ::close(fd);
}

PouchDbServer::~PouchDbServer() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status;
    ::waitpid(pid_, &status, 0);
  }
  if (drainer_.joinable()) drainer_.join();
  std::error_code ignored;
  if (!work_dir_.empty()) std::filesystem::remove_all(work_dir_, ignored);
}

std::string PouchDbServer::url() const { return absl::StrCat("http://127.0.0.1:", port_); }

bool PouchDbServer::WaitForOutput(const std::string& text, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto seen = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return exited_ || absl::StrContains(output_, text);
  };
  return mu_.AwaitWithTimeout(absl::Condition(&seen), timeout) &&
         absl::StrContains(output_, text);
}

std::string PouchDbServer::output() const {
  absl::MutexLock lock(&mu_);
  return output_;
}

}  // namespace cnp::upload::testing
