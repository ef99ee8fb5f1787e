// Cancellation end to end, through a real cnp-server with real workers: what a call held is let
// go as soon as its client cancels, its deadline passes or its process is killed (the
// connection closes, no cancel is sent), so that the next call is served at once instead of
// after the abandoned work. Each test occupies every worker
// with a function that runs for minutes, makes sure it is running (the function writes to a
// FIFO the test reads), ends the call from the client's side, and then needs a new call served
// within a bound far below what the abandoned work would take.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <iostream>
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
#include "tests/support/runfiles.h"
#include "tests/support/server_process.h"
#include "tests/support/spawn.h"
#include "tests/support/start_signal.h"

namespace cnp {
namespace {

using ::cnp::testing::ServerProcess;
using ::cnp::testing::StartSignal;

// How long the next call may take once the abandoned work is let go: a worker restart at most.
// The abandoned work itself would take minutes.
constexpr absl::Duration kPrompt = absl::Seconds(15);

std::unique_ptr<v1::Functions::Stub> Stub(const ServerProcess& server) {
  return v1::Functions::NewStub(
      grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials()));
}

std::string DocWithSignal(const std::string& id, const std::string& signal) {
  return absl::StrCat(R"({"_id":")", id, R"(","signal":")", signal, R"("})");
}

// A Validate that runs until its call ends, and says on `started` that it began.
v1::ValidateRequest SlowValidate(const StartSignal& started) {
  v1::ValidateRequest request;
  request.set_function("rpc_fns.slow_validate");
  request.set_new_doc(DocWithSignal("slow", started.path()));
  return request;
}

// A quick Validate; true when it was answered (FORBIDDEN: the document has no town) within
// kPrompt.
bool QuickValidateServedPromptly(v1::Functions::Stub& stub, absl::Duration* took) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kPrompt));
  v1::ValidateRequest request;
  request.set_function("rpc_fns.quick_validate");
  request.set_new_doc(R"({"_id":"x"})");
  v1::ValidateResponse response;
  const absl::Time start = absl::Now();
  grpc::Status status = stub.Validate(&context, request, &response);
  *took = absl::Now() - start;
  EXPECT_TRUE(status.ok()) << status.error_message();
  return status.ok() && response.outcome() == v1::ValidateResponse::FORBIDDEN;
}

TEST(CancellationTest, CancelledMapOfManyDocumentsFreesItsWorkersAtOnce) {
  auto server = ServerProcess::StartWithFunctions({"tests/rpc/pyfns"}, 2);
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  StartSignal started;
  // 100,000 documents at 10 ms each: over eight minutes of work for two workers.
  v1::MapRequest request;
  request.add_functions("rpc_fns.slow_map");
  for (int i = 0; i < 100000; ++i) {
    request.add_docs(i == 0 ? DocWithSignal("d0", started.path())
                            : absl::StrCat(R"({"_id":"d)", i, R"("})"));
  }
  grpc::ClientContext map_context;
  v1::MapResponse map_response;
  grpc::Status map_status;
  std::thread map_call([&] { map_status = stub->Map(&map_context, request, &map_response); });
  ASSERT_TRUE(started.Wait(absl::Seconds(60))) << server->Log();
  map_context.TryCancel();
  map_call.join();
  EXPECT_EQ(map_status.error_code(), grpc::StatusCode::CANCELLED);
  absl::Duration took;
  EXPECT_TRUE(QuickValidateServedPromptly(*stub, &took)) << server->Log();
  EXPECT_LT(took, kPrompt);
}

TEST(CancellationTest, CancelledValidateFreesItsWorker) {
  auto server = ServerProcess::StartWithFunctions({"tests/rpc/pyfns"}, 1);
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  StartSignal started;
  const v1::ValidateRequest request = SlowValidate(started);
  grpc::ClientContext slow_context;
  v1::ValidateResponse slow_response;
  grpc::Status slow_status;
  std::thread slow_call(
      [&] { slow_status = stub->Validate(&slow_context, request, &slow_response); });
  ASSERT_TRUE(started.Wait(absl::Seconds(60))) << server->Log();
  slow_context.TryCancel();
  slow_call.join();
  EXPECT_EQ(slow_status.error_code(), grpc::StatusCode::CANCELLED);
  absl::Duration took;
  EXPECT_TRUE(QuickValidateServedPromptly(*stub, &took)) << server->Log();
}

// Past --shutdown-grace the server stops the work still running: the call is answered in the
// server's own words (UNAVAILABLE, retry elsewhere), not gRPC's generic "Cancelling all calls".
TEST(CancellationTest, ACallStoppedPastTheShutdownGraceIsToldWhyByTheServer) {
  auto server = ServerProcess::StartWithFunctions({"tests/rpc/pyfns"}, 1, {"--shutdown-grace=1s"});
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  StartSignal started;
  const v1::ValidateRequest request = SlowValidate(started);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  v1::ValidateResponse response;
  grpc::Status status;
  std::thread call([&] { status = stub->Validate(&context, request, &response); });
  ASSERT_TRUE(started.Wait(absl::Seconds(60))) << server->Log();
  server->Signal(SIGTERM);
  call.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << status.error_message() << "\n" << server->Log();
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("shut down"));
}

TEST(CancellationTest, DeadlinePassingMidTaskFreesTheWorker) {
  auto server = ServerProcess::StartWithFunctions({"tests/rpc/pyfns"}, 1);
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  StartSignal started;
  const v1::ValidateRequest request = SlowValidate(started);
  grpc::ClientContext slow_context;
  slow_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(3)));
  v1::ValidateResponse slow_response;
  grpc::Status slow_status = stub->Validate(&slow_context, request, &slow_response);
  EXPECT_EQ(slow_status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(started.Wait(absl::ZeroDuration())) << "the function never ran";
  absl::Duration took;
  EXPECT_TRUE(QuickValidateServedPromptly(*stub, &took)) << server->Log();
}

// A cancel on a stream (RST_STREAM) whose connection stays open: the next call goes over the
// same channel.
TEST(CancellationTest, ClientCancellingMidStreamFreesTheWorker) {
  auto server = ServerProcess::StartWithFunctions({"tests/rpc/pyfns"}, 1);
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  StartSignal started;
  grpc::ClientContext context;
  auto stream = stub->MapStream(&context);
  v1::MapRequest request;
  request.add_functions("rpc_fns.slow_map");
  for (int i = 0; i < 20000; ++i) {
    request.add_docs(i == 0 ? DocWithSignal("d0", started.path())
                            : absl::StrCat(R"({"_id":"d)", i, R"("})"));
  }
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(started.Wait(absl::Seconds(60))) << server->Log();
  context.TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  absl::Duration took;
  EXPECT_TRUE(QuickValidateServedPromptly(*stub, &took)) << server->Log();
  EXPECT_LT(took, kPrompt);
}

// A client that disappears: the process is killed mid-stream, so no cancel is ever sent; its
// connection closes, and that alone must let the worker go.
TEST(CancellationTest, ClientKilledMidStreamFreesTheWorker) {
  auto server = ServerProcess::StartWithFunctions({"tests/rpc/pyfns"}, 1);
  ASSERT_NE(server, nullptr);
  StartSignal started;
  absl::StatusOr<pid_t> client = testing::Spawn(
      {.argv = {testing::Runfile("tests/rpc/disconnecting_client"), server->target(),
                started.path()}});
  ASSERT_TRUE(client.ok()) << client.status();
  const bool running = started.Wait(absl::Seconds(60));
  ASSERT_EQ(::kill(*client, SIGKILL), 0);
  const int status = testing::WaitForExit(*client);
  ASSERT_TRUE(running) << "the client's message never reached a worker\n" << server->Log();
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the client ended by itself (exit code " << testing::ExitCode(status) << ")";
  auto stub = Stub(*server);
  absl::Duration took;
  EXPECT_TRUE(QuickValidateServedPromptly(*stub, &took)) << server->Log();
  EXPECT_LT(took, kPrompt);
  std::cerr << "the next call was answered " << took << " after the client was killed\n";
}

}  // namespace
}  // namespace cnp
