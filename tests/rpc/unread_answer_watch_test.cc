// An answer its client does not take (service/rpc/unread_answer_watch.h), against a real gRPC
// server on a unix socket: the call is cancelled once the answer has waited --call-timeout
// (and a second per MiB of it), also when an earlier, larger answer had set the watch's alarm
// for later (the alarm once waited for that one's allowance: up to a minute more per 64 MiB
// answer before).
#include "service/rpc/unread_answer_watch.h"

#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "cnp/v1/functions.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "service/grpc_asio/call_done.h"
#include "service/grpc_asio/grpc_context.h"
#include "service/grpc_asio/grpc_operations.h"

namespace cnp::rpc {
namespace {

using Service = v1::Functions::WithAsyncMethod_Validate<v1::Functions::Service>;

std::string NoPeer(const void*) { return "the test's client"; }

// Takes one Validate call and, as a stream would, has two answers ready in turn: a large one
// its client took, then a small one it never takes. Says how long after the second was ready
// the call was cancelled.
asio::awaitable<void> ServeOne(grpc_asio::GrpcContext& context, Service& service,
                               absl::Duration timeout, int64_t first_bytes,
                               std::promise<absl::Duration>& cancelled_after) {
  auto server_context = std::make_shared<grpc::ServerContext>();
  v1::ValidateRequest request;
  grpc::ServerAsyncResponseWriter<v1::ValidateResponse> responder(server_context.get());
  auto done = std::make_shared<grpc_asio::CallDone>(context, *server_context);
  if (!co_await grpc_asio::RequestCall(context, service, &Service::RequestValidate,
                                       *server_context, request, responder)) {
    co_return;
  }
  {
    UnreadAnswerWatch watch(context, server_context, *server_context, *done, "Validate", NoPeer,
                            timeout);
    watch.Ready(first_bytes);
    watch.Taken();
    const absl::Time ready = absl::Now();
    watch.Ready(100);
    co_await done->Wait();
    cancelled_after.set_value(done->cancelled() ? absl::Now() - ready
                                                : absl::InfiniteDuration());
  }
}

class UnreadAnswerWatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/unread_answer.XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    const std::string address = "unix:" + dir_ + "/s.sock";
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials());
    builder.RegisterService(&service_);
    context_ = std::make_unique<grpc_asio::GrpcContext>(builder.AddCompletionQueue());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    thread_ = std::thread([this] { context_->Run(); });
    stub_ = v1::Functions::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now());
    context_->Shutdown();
    thread_.join();
    server_.reset();
    context_.reset();
    ::unlink((dir_ + "/s.sock").c_str());
    ::rmdir(dir_.c_str());
  }

  // The call's client, which waits for an answer that never comes; how long after the unread
  // answer was ready the server cancelled the call.
  absl::Duration CancelledAfter(absl::Duration timeout, int64_t first_bytes) {
    std::promise<absl::Duration> cancelled_after;
    asio::co_spawn(*context_,
                   ServeOne(*context_, service_, timeout, first_bytes, cancelled_after),
                   asio::detached);
    grpc::ClientContext client;
    client.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::ValidateRequest request;
    v1::ValidateResponse response;
    const grpc::Status status = stub_->Validate(&client, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
    return cancelled_after.get_future().get();
  }

  std::string dir_;
  Service service_;
  std::unique_ptr<grpc_asio::GrpcContext> context_;
  std::unique_ptr<grpc::Server> server_;
  std::thread thread_;
  std::unique_ptr<v1::Functions::Stub> stub_;
};

TEST_F(UnreadAnswerWatchTest, AnAnswerLeftUnreadCancelsTheCallAfterItsOwnAllowance) {
  // The taken answer of 16 MiB had 17 s; the unread one of 100 bytes has 1 s.
  const absl::Duration after = CancelledAfter(absl::Seconds(1), int64_t{16} << 20);
  EXPECT_GE(after, absl::Milliseconds(990));
  EXPECT_LT(after, absl::Seconds(8)) << "waited for the earlier answer's allowance";
}

}  // namespace
}  // namespace cnp::rpc
