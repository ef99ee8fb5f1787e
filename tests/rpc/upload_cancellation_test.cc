// Uploads are cancelled with their call: a fake CouchDB accepts the upload's connection and
// never answers, and cancelling the call (or shutting the server down) must close that
// connection promptly - the upload would otherwise wait out its 60 s HTTP timeout, on a thread
// nobody joins. Likewise while a worker resolves the upload's functions: a cancelled Upload, or
// one whose deadline passed, gives up its task (dropped if still queued, its worker replaced if
// running) and its upload thread at once, rather than after the 30 s resolve timeout. And while every upload thread is held that way, an Upload without the token is
// refused at once and one past the waiting room is refused RESOURCE_EXHAUSTED: neither waits
// for a thread holding its request.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/server_process.h"
#include "tests/support/start_signal.h"

namespace cnp {
namespace {

using ::cnp::testing::ServerProcess;

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

v1::UploadRequest UploadTo(const SilentCouchDb& couchdb, const std::string& database = "db") {
  v1::UploadRequest request;
  v1::UploadFile* file = request.add_files();
  file->set_name("design.yml");
  file->set_text("towns:\n  validate_doc_update: rpc_fns.quick_validate\n");
  request.set_couchdb_url(couchdb.url());
  request.set_database(database);
  return request;
}

TEST(CancellationTest, CancelledUploadStopsTalkingToCouchDb) {
  auto server = ServerProcess::StartWithFunctions({"tests/rpc/pyfns"}, 1);
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  SilentCouchDb couchdb;
  grpc::ClientContext context;
  auto reader = stub->Upload(&context, UploadTo(couchdb));
  ASSERT_TRUE(couchdb.AwaitRequest(absl::Seconds(60))) << server->Log();
  context.TryCancel();
  // The upload would otherwise wait for CouchDB's answer for its whole HTTP timeout (60 s):
  // the wait itself is the check, closed within 10 s of the cancel or not at all.
  EXPECT_TRUE(couchdb.AwaitClosed(absl::Seconds(10))) << server->Log();
  v1::UploadEvent event;
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

// A registration's access-log line names its registry database and says it registers (a
// probe read "mode=write database=-" for one).
TEST(UploadAccessLogTest, ARegistrationNamesItsRegistry) {
  auto server = ServerProcess::StartWithFunctions({"tests/rpc/pyfns"}, 1);
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  SilentCouchDb couchdb;
  grpc::ClientContext context;
  v1::UploadRequest request = UploadTo(couchdb, "");
  request.set_register_database("registry");
  auto reader = stub->Upload(&context, request);
  EXPECT_TRUE(server->WaitForLog("database=registry", absl::Seconds(30))) << server->Log();
  EXPECT_THAT(server->Log(), ::testing::HasSubstr("mode=register")) << server->Log();
  context.TryCancel();
  v1::UploadEvent event;
  while (reader->Read(&event)) {
  }
}

TEST(CancellationTest, ShutdownWithAnUploadInFlightEndsPromptly) {
  auto server = ServerProcess::StartWithFunctions({"tests/rpc/pyfns"}, 1, {"--shutdown-grace=1s"});
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
  // Told so in the server's own words, retryable elsewhere, as other calls past the grace are:
  // the upload is stopped with the workers, not left for gRPC to cancel a second later with
  // its generic "Cancelling all calls".
  const grpc::Status finished = reader->Finish();
  EXPECT_EQ(finished.error_code(), grpc::StatusCode::UNAVAILABLE) << finished.error_message();
  EXPECT_THAT(finished.error_message(),
              ::testing::HasSubstr("the server shut down before the upload finished"));
}

// One Upload left running: cancelled and finished when the test ends.
struct RunningUpload {
  RunningUpload(v1::Functions::Stub& stub, const v1::UploadRequest& request) {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(2));
    reader = stub.Upload(&context, request);
  }
  ~RunningUpload() {
    context.TryCancel();
    v1::UploadEvent event;
    while (reader->Read(&event)) {
    }
    reader->Finish();
  }
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::UploadEvent>> reader;
};

// An Upload that must be answered at once: its status, within a 10 s deadline.
grpc::Status UploadAnsweredAtOnce(v1::Functions::Stub& stub, const v1::UploadRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto reader = stub.Upload(&context, request);
  v1::UploadEvent event;
  while (reader->Read(&event)) {
  }
  return reader->Finish();
}

TEST(UploadAdmissionTest, WhileEveryUploadThreadIsHeldRefusalsComeAtOnce) {
  const std::string dir = testing::ShortTempDir();
  testing::WriteFile(dir + "/token", "upload-admission-token\n");
  auto server = ServerProcess::StartWithFunctions(
      {"tests/rpc/pyfns"}, 1,
      {"--listen=127.0.0.1:0", "--auth-token-file=" + dir + "/token", "--max-waiting-uploads=1"});
  ASSERT_NE(server, nullptr);
  // Over the unix socket no token is needed; over TCP it is.
  auto local = Stub(*server);
  auto tcp = v1::Functions::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", server->Port()), grpc::InsecureChannelCredentials()));

  // Both upload threads held by uploads to CouchDBs that never answer.
  SilentCouchDb first_couchdb, second_couchdb, waiting_couchdb;
  RunningUpload first(*local, UploadTo(first_couchdb));
  ASSERT_TRUE(first_couchdb.AwaitRequest(absl::Seconds(60))) << server->Log();
  RunningUpload second(*local, UploadTo(second_couchdb));
  ASSERT_TRUE(second_couchdb.AwaitRequest(absl::Seconds(60))) << server->Log();
  // A third takes the one place to wait (its access-log line is written once it holds it).
  auto waiting = std::make_unique<RunningUpload>(*local, UploadTo(waiting_couchdb, "waiting"));
  EXPECT_TRUE(server->WaitForLog("database=waiting", absl::Seconds(30))) << server->Log();

  // Without the token: refused by the gate, not queued behind the uploads.
  SilentCouchDb unused;
  const grpc::Status unauthenticated = UploadAnsweredAtOnce(*tcp, UploadTo(unused, "nobody"));
  EXPECT_EQ(unauthenticated.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << unauthenticated.error_message();
  EXPECT_TRUE(server->WaitForLog("call=Upload code=UNAUTHENTICATED", absl::Seconds(10)))
      << server->Log();
  EXPECT_EQ(server->Log().find("database=nobody"), std::string::npos) << server->Log();

  // Allowed, but with no place left to wait: told so at once, with the flag to raise.
  const grpc::Status full = UploadAnsweredAtOnce(*local, UploadTo(unused, "one-too-many"));
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << full.error_message() << "\n" << server->Log();
  EXPECT_THAT(full.error_message(), ::testing::HasSubstr("--max-waiting-uploads"));

  // The waiting upload still runs once a thread is free.
  first.context.TryCancel();
  EXPECT_TRUE(waiting_couchdb.AwaitRequest(absl::Seconds(60))) << server->Log();
}

// An Upload may hold its request for hours (a staged build), and the upload slots alone let ten
// of them hold ten times --max-call-bytes: requests count against --max-grpc-memory as a unary
// call's do, from admission until the upload ends.
TEST(UploadAdmissionTest, UploadsHoldingMoreThanTheMemoryBudgetAreRefused) {
  auto server = ServerProcess::StartWithFunctions(
      {"tests/rpc/pyfns"}, 1, {"--max-call-bytes=4194304", "--max-grpc-memory=8388608"});
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  // Each request about 2.5 MiB (a YAML file mostly comments), counted twice until it is
  // parsed, then once while its upload runs: two fit in 8 MiB, a third does not.
  auto large_upload_to = [](const SilentCouchDb& couchdb, const std::string& database) {
    v1::UploadRequest request = UploadTo(couchdb, database);
    std::string& text = *request.mutable_files(0)->mutable_text();
    for (int i = 0; i < 20 * 1024; ++i) text += "# " + std::string(125, 'x') + "\n";
    return request;
  };
  SilentCouchDb first_couchdb, second_couchdb, later_couchdb, unused;
  RunningUpload first(*stub, large_upload_to(first_couchdb, "first"));
  ASSERT_TRUE(first_couchdb.AwaitRequest(absl::Seconds(60))) << server->Log();
  RunningUpload second(*stub, large_upload_to(second_couchdb, "second"));
  ASSERT_TRUE(second_couchdb.AwaitRequest(absl::Seconds(60))) << server->Log();

  const grpc::Status refused = UploadAnsweredAtOnce(*stub, large_upload_to(unused, "third"));
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.error_message() << "\n" << server->Log();
  EXPECT_THAT(refused.error_message(), ::testing::HasSubstr("--max-grpc-memory"));
  EXPECT_EQ(server->Log().find("database=third"), std::string::npos) << server->Log();

  // An upload that ends gives its request's memory back.
  first.context.TryCancel();
  ASSERT_TRUE(first_couchdb.AwaitClosed(absl::Seconds(10))) << server->Log();
  RunningUpload later(*stub, large_upload_to(later_couchdb, "later"));
  EXPECT_TRUE(later_couchdb.AwaitRequest(absl::Seconds(60))) << server->Log();
}

// An Upload that only checks (no CouchDB), whose one design document names `function` (none
// when empty: then no worker is asked). `label` goes into the access log as its database.
v1::UploadRequest CheckOnly(const std::string& label, const std::string& function) {
  v1::UploadRequest request;
  v1::UploadFile* file = request.add_files();
  file->set_name("design.yml");
  file->set_text(function.empty() ? "towns:\n  options: {local_seq: true}\n"
                                  : absl::StrCat("towns:\n  views:\n    by_town: ", function, "\n"));
  request.set_check_only(true);
  request.set_database(label);
  return request;
}

// Reads an Upload's stream to its end; its status.
grpc::Status Drain(grpc::ClientReader<v1::UploadEvent>& reader) {
  v1::UploadEvent event;
  while (reader.Read(&event)) {
  }
  return reader.Finish();
}

// Asks for `request` (by default an Upload that needs no worker) until it is let in (not
// RESOURCE_EXHAUSTED: every upload slot held), for up to `patience`, each try with a deadline of
// `timeout`; its status then. A slot is given back on the server's side a moment after the
// client saw its call end, and nothing announces it: each try asks again at once (a refusal is
// immediate), and only a slot given back lets one in.
grpc::Status AdmittedWithin(v1::Functions::Stub& stub, absl::Duration patience,
                            const v1::UploadRequest& request = CheckOnly("no-worker", ""),
                            absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time until = absl::Now() + patience;
  grpc::Status status;
  do {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    auto reader = stub.Upload(&context, request);
    status = Drain(*reader);
    if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) return status;
  } while (absl::Now() < until);
  return status;
}

// A check whose design document has `keys` fields CouchDB owns: an error event for each.
v1::UploadRequest ManyProblems(const std::string& label, int keys) {
  std::string text = "towns:\n";
  for (int n = 0; n < keys; ++n) absl::StrAppend(&text, "  _field_", n, ": 1\n");
  v1::UploadRequest request;
  v1::UploadFile* file = request.add_files();
  file->set_name("design.yml");
  file->set_text(text);
  request.set_check_only(true);
  request.set_database(label);
  return request;
}

// An HTTP/2 frame's header and payload.
std::string Frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload) {
  std::string frame;
  const uint32_t length = payload.size();
  frame.push_back(static_cast<char>(length >> 16));
  frame.push_back(static_cast<char>(length >> 8));
  frame.push_back(static_cast<char>(length));
  frame.push_back(static_cast<char>(type));
  frame.push_back(static_cast<char>(flags));
  for (int shift = 24; shift >= 0; shift -= 8) frame.push_back(static_cast<char>(stream >> shift));
  return frame + payload;
}

// An HPACK literal header field, not indexed, without Huffman coding (names and values here
// are all under 127 bytes).
std::string Literal(const std::string& name, const std::string& value) {
  std::string field(1, '\0');
  field.push_back(static_cast<char>(name.size()));
  field += name;
  field.push_back(static_cast<char>(value.size()));
  return field + value;
}

// An Upload made over a raw HTTP/2 connection whose client announces a window of 0 bytes for
// its streams and then reads nothing more: the server can send it no event (gRPC's own
// clients open their windows as they see fit, so they cannot be made to do this).
class UnreadUpload {
 public:
  UnreadUpload(const std::string& target, const v1::UploadRequest& request) {
    const std::string path = target.substr(std::string("unix:").size());
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    path.copy(address.sun_path, sizeof address.sun_path - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) return;
    std::string out = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    out += Frame(4, 0, 0, std::string("\x00\x04\x00\x00\x00\x00", 6));  // INITIAL_WINDOW_SIZE 0
    out += Frame(1, 4, 1,  // HEADERS, END_HEADERS
                 Literal(":method", "POST") + Literal(":scheme", "http") +
                     Literal(":path", "/cnp.v1.Functions/Upload") +
                     Literal(":authority", "localhost") +
                     Literal("content-type", "application/grpc") + Literal("te", "trailers"));
    const std::string message = request.SerializeAsString();
    std::string data(1, '\0');
    for (int shift = 24; shift >= 0; shift -= 8) {
      data.push_back(static_cast<char>(message.size() >> shift));
    }
    out += Frame(0, 1, 1, data + message);  // DATA, END_STREAM
    sent_ = ::send(fd_, out.data(), out.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(out.size());
    // The server's SETTINGS are acknowledged, so that it keeps the connection; nothing else
    // is read from then on.
    std::string in;
    const absl::Time until = absl::Now() + absl::Seconds(30);
    while (sent_ && !acked_ && absl::Now() < until) {
      pollfd ready{fd_, POLLIN, 0};
      if (::poll(&ready, 1, 1000) != 1) continue;
      char buffer[4096];
      const ssize_t got = ::read(fd_, buffer, sizeof buffer);
      if (got <= 0) break;
      in.append(buffer, got);
      while (in.size() >= 9) {
        const size_t length = (static_cast<uint8_t>(in[0]) << 16) |
                              (static_cast<uint8_t>(in[1]) << 8) | static_cast<uint8_t>(in[2]);
        if (in.size() < 9 + length) break;
        if (in[3] == 4 && (in[4] & 1) == 0) {
          const std::string ack = Frame(4, 1, 0, "");
          acked_ = ::send(fd_, ack.data(), ack.size(), MSG_NOSIGNAL) == 9;
        }
        in.erase(0, 9 + length);
      }
    }
  }
  ~UnreadUpload() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return sent_ && acked_; }

 private:
  int fd_ = -1;
  bool sent_ = false;
  bool acked_ = false;
};

// Two Uploads whose clients read none of their events (their HTTP/2 window is 0): the server's
// write of an event waits for the client, which never takes it. Each such write used to wait
// for as long as the call lasted (here, as long as the connection), both upload threads held,
// and every other Upload waited behind them or was refused; now a write waits at most
// --call-timeout, then the call is cancelled and its thread freed.
TEST(UploadWriteTest, ClientsThatReadNothingDoNotHoldTheUploadThreads) {
  auto server = ServerProcess::StartWithFunctions({"tests/rpc/pyfns"}, 1,
                                                 {"--call-timeout=2s", "--max-waiting-uploads=0"});
  ASSERT_NE(server, nullptr);
  std::vector<std::unique_ptr<UnreadUpload>> unread;
  for (int n = 0; n < 2; ++n) {
    unread.push_back(std::make_unique<UnreadUpload>(server->target(),
                                                    ManyProblems(absl::StrCat("unread", n), 100)));
    ASSERT_TRUE(unread.back()->ok()) << server->Log();
    // Its access-log line is written once it holds its place.
    ASSERT_TRUE(server->WaitForLog(absl::StrCat("database=unread", n), absl::Seconds(30)))
        << server->Log();
  }
  // Both places held (no waiting room): another Upload is let in once one is given back.
  const absl::Time asked = absl::Now();
  auto stub = Stub(*server);
  const grpc::Status checked = AdmittedWithin(*stub, absl::Seconds(40));
  const absl::Duration took = absl::Now() - asked;
  std::cerr << "an Upload while two clients read nothing: code " << checked.error_code()
            << " after " << took << "\n";
  EXPECT_TRUE(checked.ok()) << checked.error_message() << "\n" << server->Log();
  EXPECT_TRUE(server->WaitForLog("took no message for 2s", absl::Seconds(10))) << server->Log();
}

// A Validate that holds the one worker until it is cancelled (the test's end).
class BusyWorker {
 public:
  explicit BusyWorker(v1::Functions::Stub& stub) {
    request_.set_function("rpc_fns.slow_validate");
    request_.set_new_doc(absl::StrCat(R"({"_id":"slow","signal":")", started_.path(), R"("})"));
    call_ = std::thread([this, &stub] { stub.Validate(&context_, request_, &response_); });
  }
  ~BusyWorker() {
    context_.TryCancel();
    call_.join();
  }
  bool Started() { return started_.Wait(absl::Seconds(60)); }

 private:
  testing::StartSignal started_;
  v1::ValidateRequest request_;
  grpc::ClientContext context_;
  v1::ValidateResponse response_;
  std::thread call_;
};

// Both upload threads are taken by Uploads whose resolve waits for the busy worker; one is
// cancelled, the other's deadline passes. Each used to wait out its 30 s resolve timeout all the
// same, holding its thread and its place, so that every other Upload was refused meanwhile.
TEST(UploadResolveTest, CancelledOrLateUploadsWaitingForAWorkerFreeTheirThreadsAtOnce) {
  auto server =
      ServerProcess::StartWithFunctions({"tests/rpc/pyfns"}, 1, {"--max-waiting-uploads=0"});
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  BusyWorker busy(*stub);
  ASSERT_TRUE(busy.Started()) << server->Log();

  grpc::ClientContext cancelled_context;
  auto cancelled = stub->Upload(&cancelled_context, CheckOnly("cancelled", "rpc_fns.slow_map"));
  ASSERT_TRUE(server->WaitForLog("database=cancelled", absl::Seconds(30))) << server->Log();
  cancelled_context.TryCancel();
  EXPECT_EQ(Drain(*cancelled).error_code(), grpc::StatusCode::CANCELLED);

  grpc::ClientContext late_context;
  late_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  auto late = stub->Upload(&late_context, CheckOnly("late", "rpc_fns.slow_map"));
  EXPECT_EQ(Drain(*late).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);

  // Well before the 30 s resolve timeout would have freed either thread.
  const grpc::Status next = AdmittedWithin(*stub, absl::Seconds(10));
  EXPECT_TRUE(next.ok()) << next.error_message() << "\n" << server->Log();
}

// An Upload cancelled while it waits for an upload thread (both held by uploads to CouchDBs that
// never answer) gives its place among the waiting calls up at once: it used to hold it until a
// thread took it up, here for a minute (the HTTP timeout), after a staged build for hours.
TEST(UploadAdmissionTest, AnUploadCancelledWhileWaitingForAThreadGivesUpItsPlaceAtOnce) {
  auto server =
      ServerProcess::StartWithFunctions({"tests/rpc/pyfns"}, 1, {"--max-waiting-uploads=1"});
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  SilentCouchDb first_couchdb, second_couchdb, unused;
  RunningUpload first(*stub, UploadTo(first_couchdb));
  ASSERT_TRUE(first_couchdb.AwaitRequest(absl::Seconds(60))) << server->Log();
  RunningUpload second(*stub, UploadTo(second_couchdb));
  ASSERT_TRUE(second_couchdb.AwaitRequest(absl::Seconds(60))) << server->Log();

  grpc::ClientContext waiting_context;
  auto waiting = stub->Upload(&waiting_context, UploadTo(unused, "waiting"));
  ASSERT_TRUE(server->WaitForLog("database=waiting", absl::Seconds(30))) << server->Log();
  waiting_context.TryCancel();
  EXPECT_EQ(Drain(*waiting).error_code(), grpc::StatusCode::CANCELLED);

  // The next one takes the place and waits in it, until its own deadline.
  const grpc::Status next = AdmittedWithin(*stub, absl::Seconds(10), UploadTo(unused, "next"),
                                           absl::Seconds(1));
  EXPECT_EQ(next.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << next.error_message() << "\n" << server->Log();
  EXPECT_TRUE(server->WaitForLog("database=next", absl::Seconds(10))) << server->Log();
  // The cancelled one never ran: it never reached its CouchDB.
  EXPECT_FALSE(unused.AwaitRequest(absl::Milliseconds(100)));
}

// The worker had already taken the resolve task (its import takes ten minutes) when the Upload
// was cancelled: the worker is killed and replaced, as for any cancelled call, and serves the
// next call.
TEST(UploadResolveTest, AnUploadCancelledMidResolveHasItsWorkerReplaced) {
  auto server =
      ServerProcess::StartWithFunctions({"tests/rpc/pyfns"}, 1, {"--max-waiting-uploads=0"});
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  grpc::ClientContext context;
  auto upload = stub->Upload(&context, CheckOnly("slow-import", "slow_import_fns.by_town"));
  ASSERT_TRUE(server->WaitForLog("slow_import_fns: importing", absl::Seconds(60)))
      << server->Log();
  context.TryCancel();
  EXPECT_EQ(Drain(*upload).error_code(), grpc::StatusCode::CANCELLED);
  // Not after the resolve timeout (30 s), which would say it missed its deadline instead.
  EXPECT_TRUE(server->WaitForLog("for a call that was cancelled: killing and replacing it",
                                 absl::Seconds(10)))
      << server->Log();

  grpc::ClientContext validate_context;
  validate_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(15)));
  v1::ValidateRequest request;
  request.set_function("rpc_fns.quick_validate");
  request.set_new_doc(R"({"_id":"x"})");
  v1::ValidateResponse response;
  const grpc::Status validated = stub->Validate(&validate_context, request, &response);
  EXPECT_TRUE(validated.ok()) << validated.error_message() << "\n" << server->Log();
  EXPECT_EQ(response.outcome(), v1::ValidateResponse::FORBIDDEN);
}

}  // namespace
}  // namespace cnp
