// cnp-server's own grpc.health.v1 service on a real gRPC server (a unix socket made here, one
// GrpcContext): Check and Watch for the server and its named services, a name it does not
// know, every change told to a watcher, a client that stops watching, and the shutdown (the
// status frozen at NOT_SERVING, watchers ended with UNAVAILABLE so that the server's shutdown
// does not wait for them).
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "service/grpc_asio/grpc_context.h"
#include "service/rpc/health_service.h"
#include "service/rpc/shutdown_gate.h"

namespace cnp::rpc {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

constexpr auto kBound = std::chrono::seconds(20);

std::string NoPeer(const void*) { return "test"; }

class HealthServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/health_service_test.XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    const std::string address = "unix:" + dir_ + "/s.sock";
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials());
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &tcp_port_);
    builder.RegisterService(health_.service());
    context_ = std::make_unique<grpc_asio::GrpcContext>(builder.AddCompletionQueue());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    health_.Listen(*context_, gate_, &NoPeer);
    thread_ = std::thread([this] { context_->Run(); });
    stub_ = Health::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (server_ != nullptr) {
      // As RpcServer does: the status frozen, the streams drained, then gRPC's shutdown.
      health_.Freeze();
      gate_.DrainStreams();
      server_->Shutdown(std::chrono::system_clock::now() + kBound);
      context_->Shutdown();
      thread_.join();
    }
    ::unlink((dir_ + "/s.sock").c_str());
    ::rmdir(dir_.c_str());
  }

  grpc::Status Check(const std::string& service, HealthCheckResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kBound);
    HealthCheckRequest request;
    request.set_service(service);
    return stub_->Check(&context, request, response);
  }

  HealthCheckResponse::ServingStatus CheckedStatus(const std::string& service) {
    HealthCheckResponse response;
    const grpc::Status status = Check(service, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }

  // A Watch of `service`, read message by message.
  struct Watch {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> reader;
    HealthCheckResponse::ServingStatus Next() {
      HealthCheckResponse response;
      if (!reader->Read(&response)) return HealthCheckResponse::UNKNOWN;
      return response.status();
    }
  };
  std::unique_ptr<Watch> StartWatch(const std::string& service, Health::Stub* stub = nullptr) {
    auto watch = std::make_unique<Watch>();
    watch->context.set_deadline(std::chrono::system_clock::now() + kBound);
    HealthCheckRequest request;
    request.set_service(service);
    watch->reader = (stub != nullptr ? stub : stub_.get())->Watch(&watch->context, request);
    return watch;
  }

  // A stub on a TCP connection of its own (gRPC names each TCP peer apart, unix peers alike).
  std::unique_ptr<Health::Stub> TcpConnection() {
    grpc::ChannelArguments arguments;
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return Health::NewStub(grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(tcp_port_), grpc::InsecureChannelCredentials(), arguments));
  }

  std::string dir_;
  // Smaller than cnp-server's (4 and 256), for the test of the bounds.
  HealthService health_{{"cnp.v1.Functions"}, WatchLimits{.per_connection = 2, .total = 3}};
  int tcp_port_ = 0;
  ShutdownGate gate_;
  std::unique_ptr<grpc_asio::GrpcContext> context_;
  std::unique_ptr<grpc::Server> server_;
  std::thread thread_;
  std::unique_ptr<Health::Stub> stub_;
};

TEST_F(HealthServiceTest, ChecksTheServerAndItsServicesAlike) {
  EXPECT_EQ(CheckedStatus(""), HealthCheckResponse::NOT_SERVING);  // until it is told
  EXPECT_EQ(CheckedStatus("cnp.v1.Functions"), HealthCheckResponse::NOT_SERVING);
  health_.SetServing(true);
  EXPECT_EQ(CheckedStatus(""), HealthCheckResponse::SERVING);
  EXPECT_EQ(CheckedStatus("cnp.v1.Functions"), HealthCheckResponse::SERVING);
  health_.SetServing(false);
  EXPECT_EQ(CheckedStatus(""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(CheckedStatus("cnp.v1.Functions"), HealthCheckResponse::NOT_SERVING);
}

TEST_F(HealthServiceTest, AnUnknownNameIsNotFoundToCheckAndServiceUnknownToWatch) {
  health_.SetServing(true);
  HealthCheckResponse response;
  const grpc::Status status = Check("cnp.v1.Nothing", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("cnp.v1.Functions"), std::string::npos)
      << status.error_message();
  auto watch = StartWatch("cnp.v1.Nothing");
  EXPECT_EQ(watch->Next(), HealthCheckResponse::SERVICE_UNKNOWN);
}

// The health service needs no token: a request of up to --max-call-bytes was parsed into a
// second copy (a security probe). One longer than a service name is refused unparsed.
TEST_F(HealthServiceTest, ARequestLongerThanAServiceNameIsRefusedUnread) {
  health_.SetServing(true);
  HealthCheckResponse response;
  const grpc::Status check = Check(std::string(100000, 'x'), &response);
  EXPECT_EQ(check.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(check.error_message().find("at most 1024 bytes"), std::string::npos)
      << check.error_message();
  auto watch = StartWatch(std::string(2000, 'x'));
  EXPECT_EQ(watch->Next(), HealthCheckResponse::UNKNOWN);
  EXPECT_EQ(watch->reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A name of up to about 1 KiB is read, and answered for.
  EXPECT_EQ(Check(std::string(1000, 'x'), &response).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(HealthServiceTest, AWatcherIsToldEveryChange) {
  health_.SetServing(true);
  auto overall = StartWatch("");
  auto named = StartWatch("cnp.v1.Functions");
  EXPECT_EQ(overall->Next(), HealthCheckResponse::SERVING);
  EXPECT_EQ(named->Next(), HealthCheckResponse::SERVING);
  health_.SetServing(true);  // no change: nothing sent
  health_.SetServing(false);
  EXPECT_EQ(overall->Next(), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(named->Next(), HealthCheckResponse::NOT_SERVING);
  health_.SetServing(true);
  EXPECT_EQ(overall->Next(), HealthCheckResponse::SERVING);
  EXPECT_EQ(named->Next(), HealthCheckResponse::SERVING);
}

TEST_F(HealthServiceTest, AWatchTheClientCancelsEndsOnTheServer) {
  health_.SetServing(true);
  auto watch = StartWatch("");
  ASSERT_EQ(watch->Next(), HealthCheckResponse::SERVING);
  watch->context.TryCancel();
  EXPECT_EQ(watch->reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The call is over on the server too: nothing is left for a shutdown to wait for, and a
  // change finds no watcher to tell.
  EXPECT_TRUE(gate_.AwaitNoCalls(absl::Now() + absl::Seconds(20)));
  health_.SetServing(false);
  EXPECT_EQ(CheckedStatus(""), HealthCheckResponse::NOT_SERVING);
}

TEST_F(HealthServiceTest, AtShutdownWatchersHearNotServingAndTheirStreamsEnd) {
  health_.SetServing(true);
  auto watch = StartWatch("cnp.v1.Functions");
  ASSERT_EQ(watch->Next(), HealthCheckResponse::SERVING);
  health_.Freeze();
  health_.SetServing(true);  // too late: the server is going away
  EXPECT_EQ(watch->Next(), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(CheckedStatus(""), HealthCheckResponse::NOT_SERVING);
  gate_.DrainStreams();
  EXPECT_EQ(watch->reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(gate_.AwaitNoCalls(absl::Now() + absl::Seconds(20)));
  // A watch that comes after the drain hears the status once, and ends.
  auto late = StartWatch("");
  EXPECT_EQ(late->Next(), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(late->reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

// Watch answers without a token, and an open one keeps its connection from being closed as
// idle: before, each connection could hold 100 (its stream limit) for good, some 16 KB each.
// Now a connection may hold 2 here, the server 3; past either a Watch is refused at once, and
// Check still answers.
TEST_F(HealthServiceTest, WatchesAreBoundedPerConnectionAndInAll) {
  health_.SetServing(true);
  auto first = TcpConnection();
  auto second = TcpConnection();
  std::vector<std::unique_ptr<Watch>> open;
  for (int i = 0; i < 2; ++i) {
    open.push_back(StartWatch("", first.get()));
    ASSERT_EQ(open.back()->Next(), HealthCheckResponse::SERVING);
  }
  auto third_on_first = StartWatch("", first.get());
  EXPECT_EQ(third_on_first->Next(), HealthCheckResponse::UNKNOWN);  // no message: refused
  grpc::Status refused = third_on_first->reader->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_NE(refused.error_message().find("this connection has 2"), std::string::npos)
      << refused.error_message();

  open.push_back(StartWatch("", second.get()));
  ASSERT_EQ(open.back()->Next(), HealthCheckResponse::SERVING);
  auto past_all = StartWatch("", second.get());
  EXPECT_EQ(past_all->Next(), HealthCheckResponse::UNKNOWN);
  refused = past_all->reader->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_NE(refused.error_message().find("the server has 3"), std::string::npos)
      << refused.error_message();
  EXPECT_EQ(CheckedStatus(""), HealthCheckResponse::SERVING);
  // Draining, it is not serving, and says so to a Watch it refuses: UNIMPLEMENTED would have a
  // client checking health take it for serving.
  health_.SetServing(false);
  auto while_draining = StartWatch("", second.get());
  EXPECT_EQ(while_draining->Next(), HealthCheckResponse::UNKNOWN);
  EXPECT_EQ(while_draining->reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  health_.SetServing(true);

  // Watches that end make room again.
  for (auto& watch : open) {
    watch->context.TryCancel();
    watch->reader->Finish();
  }
  ASSERT_TRUE(gate_.AwaitNoCalls(absl::Now() + absl::Seconds(20)));
  for (int i = 0; i < 2; ++i) {
    open.push_back(StartWatch("", first.get()));
    EXPECT_EQ(open.back()->Next(), HealthCheckResponse::SERVING);
  }
}

// A client that checks health (service config healthCheckConfig, as cnp's clients given several
// replicas) and finds every Watch taken, by peers that need no token, still sends its calls:
// refused RESOURCE_EXHAUSTED, it took the replica for not serving and failed every call
// (found by a security probe, against two replicas: `cnp map` and the adapter failed all).
TEST_F(HealthServiceTest, AClientCheckingHealthStillCallsWhenEveryWatchIsTaken) {
  health_.SetServing(true);
  auto first = TcpConnection();
  auto second = TcpConnection();
  std::vector<std::unique_ptr<Watch>> held;
  for (Health::Stub* stub : {first.get(), first.get(), second.get()}) {
    held.push_back(StartWatch("", stub));
    ASSERT_EQ(held.back()->Next(), HealthCheckResponse::SERVING);
  }
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  arguments.SetServiceConfigJSON(R"({"loadBalancingConfig": [{"round_robin": {}}],
                                     "healthCheckConfig": {"serviceName": ""}})");
  auto checking = Health::NewStub(grpc::CreateCustomChannel(
      "127.0.0.1:" + std::to_string(tcp_port_), grpc::InsecureChannelCredentials(), arguments));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kBound);
  // Waits for the replica to be taken for ready (its Watch answered), then calls it.
  context.set_wait_for_ready(true);
  HealthCheckRequest request;
  HealthCheckResponse response;
  const grpc::Status status = checking->Check(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
}

}  // namespace
}  // namespace cnp::rpc
