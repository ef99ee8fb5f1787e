// Uploads are cancelled with their call: a fake CouchDB accepts the upload's connection and
// never answers, and cancelling the call (or shutting the server down) must close that
// connection promptly - the upload would otherwise wait out its 60 s HTTP timeout, on a thread
// nobody joins.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/server_process.h"

namespace cnp {
namespace {

using ::cnp::testing::ServerProcess;

std::unique_ptr<ServerProcess> StartServer(std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--python-path=" + testing::Runfile("tests/rpc/pyfns"),
                                "--workers=1"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto server = ServerProcess::Start(args);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

std::unique_ptr<v1::Functions::Stub> Stub(const ServerProcess& server) {
  return v1::Functions::NewStub(
      grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials()));
}

// A CouchDB that accepts connections, reads the request, and never answers.
class SilentCouchDb {
 public:
  SilentCouchDb() {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(::listen(listener_, 8), 0);
    socklen_t length = sizeof address;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
  }
  ~SilentCouchDb() {
    if (connection_ >= 0) ::close(connection_);
    ::close(listener_);
  }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_); }

  // True once a client has connected and sent a request, within `timeout`.
  bool AwaitRequest(absl::Duration timeout) {
    pollfd ready{listener_, POLLIN, 0};
    if (::poll(&ready, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) != 1) {
      return false;
    }
    connection_ = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection_ < 0) return false;
    pollfd data{connection_, POLLIN, 0};
    char buffer[4096];
    return ::poll(&data, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) == 1 &&
           ::read(connection_, buffer, sizeof buffer) > 0;
  }

  // True when the client closed the connection within `timeout`.
  bool AwaitClosed(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    char buffer[4096];
    for (;;) {
      const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (left <= 0) return false;
      pollfd data{connection_, POLLIN, 0};
      if (::poll(&data, 1, static_cast<int>(left)) != 1) return false;
      if (::read(connection_, buffer, sizeof buffer) <= 0) return true;
    }
  }

 private:
  int listener_ = -1;
  int connection_ = -1;
  int port_ = 0;
};

v1::UploadRequest UploadTo(const SilentCouchDb& couchdb) {
  v1::UploadRequest request;
  v1::UploadFile* file = request.add_files();
  file->set_name("design.yml");
  file->set_text("towns:\n  validate_doc_update: rpc_fns.quick_validate\n");
  request.set_couchdb_url(couchdb.url());
  request.set_database("db");
  return request;
}

TEST(CancellationTest, CancelledUploadStopsTalkingToCouchDb) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  SilentCouchDb couchdb;
  grpc::ClientContext context;
  auto reader = stub->Upload(&context, UploadTo(couchdb));
  ASSERT_TRUE(couchdb.AwaitRequest(absl::Seconds(60))) << server->Log();
  const absl::Time cancelled = absl::Now();
  context.TryCancel();
  // The upload would otherwise wait for CouchDB's answer for its whole HTTP timeout (60 s).
  EXPECT_TRUE(couchdb.AwaitClosed(absl::Seconds(10))) << server->Log();
  EXPECT_LT(absl::Now() - cancelled, absl::Seconds(10));
  v1::UploadEvent event;
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST(CancellationTest, ShutdownWithAnUploadInFlightEndsPromptly) {
  auto server = StartServer({"--shutdown-grace=1s"});
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  SilentCouchDb couchdb;
  grpc::ClientContext context;
  auto reader = stub->Upload(&context, UploadTo(couchdb));
  ASSERT_TRUE(couchdb.AwaitRequest(absl::Seconds(60))) << server->Log();
  const absl::Time stopping = absl::Now();
  server->Signal(SIGTERM);
  const int status = server->WaitForExit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << server->Log();
  // The grace, then the upload is told to stop and its thread joined: well within CouchDB's
  // 60 s HTTP timeout.
  EXPECT_LT(absl::Now() - stopping, absl::Seconds(12)) << server->Log();
  EXPECT_TRUE(couchdb.AwaitClosed(absl::Seconds(5)));
  v1::UploadEvent event;
  while (reader->Read(&event)) {
  }
  EXPECT_FALSE(reader->Finish().ok());
}

}  // namespace
}  // namespace cnp
