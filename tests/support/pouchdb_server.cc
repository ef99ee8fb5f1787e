#include "tests/support/pouchdb_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "tests/support/runfiles.h"

namespace cnp::testing {
namespace {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

// The pouchdb-server script: $CNP_POUCHDB_SERVER, or node_modules next to the package.json
// this test has in its runfiles (a symlink into the source tree).
absl::StatusOr<std::string> FindServerScript() {
  if (std::string env = Env("CNP_POUCHDB_SERVER"); !env.empty()) return env;
  const std::string runfile = Runfile("tests/upload/package.json");
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
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
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
  server->work_dir_ = MakeTempDir("pouchdb");
  server->port_ = UnusedLoopbackPort();
  absl::StatusOr<std::unique_ptr<ChildProcess>> process = ChildProcess::Start(
      {"node", *script, "--in-memory", "-o", "127.0.0.1", "-p", std::to_string(server->port_)},
      server->work_dir_, "has started on", absl::Seconds(60));
  if (!process.ok()) return process.status();
  server->process_ = std::move(*process);
  return server;
}

PouchDbServer::~PouchDbServer() {
  process_.reset();
  std::error_code ignored;
  if (!work_dir_.empty()) std::filesystem::remove_all(work_dir_, ignored);
}

std::string PouchDbServer::url() const { return absl::StrCat("http://127.0.0.1:", port_); }

}  // namespace cnp::testing
