// A call refused for its size carries the limit as a type, end to end through a real cnp-server
// (common/call_limit.h): the server sends it in the trailer "cnp-call-limit", and the client
// library puts it back on the status it returns, where CallLimitOf reads it without reading the
// message. gRPC's own refusal of a request over --max-call-bytes, which no code of ours on the
// server sees, is marked by the client library. The server's other RESOURCE_EXHAUSTED (every
// worker busy and the queue full: retry later) carries no mark, and neither do the client's
// own limits (ClientOptions::max_message_bytes), which carry a mark of their own.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/lib/cnp_client.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "common/call_limit.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/server_process.h"
#include "tests/support/start_signal.h"

namespace cnp {
namespace {

using ::cnp::testing::ServerProcess;
using ::cnp::testing::StartSignal;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using Kind = CallLimit::Kind;

constexpr int64_t kMaxCallBytes = 100000;
constexpr int kMaxDocsPerCall = 10;

std::string DocOf(size_t bytes) {
  return absl::StrCat(R"({"_id":"big","blob":")", std::string(bytes, 'x'), R"("})");
}

// The value of the trailer `name`, if the server sent it.
std::optional<std::string> Trailer(const grpc::ClientContext& context, const std::string& name) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find(name);
  if (it == trailers.end()) return std::nullopt;
  return std::string(it->second.data(), it->second.size());
}

class CallLimitTrailerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::StartWithFunctions(
        {"tests/functions/server", "tests/rpc/pyfns"}, 1,
        {"--max-queue=0", absl::StrCat("--max-call-bytes=", kMaxCallBytes),
         absl::StrCat("--max-docs-per-call=", kMaxDocsPerCall)});
    ASSERT_NE(server_, nullptr);
    client_ = server_->Connect();
    ASSERT_NE(client_, nullptr);
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(CallLimitTrailerTest, AnAnswerPastMaxCallBytesCarriesItsLimit) {
  // Two names of a 60 KB document: 120 KB of rows from a 60 KB request.
  auto refused = client_->Map({"svc_fns.echo", "svc_fns.echo"}, {DocOf(60000)});
  ASSERT_TRUE(absl::IsResourceExhausted(refused.status())) << refused.status();
  EXPECT_EQ(CallLimitOf(refused.status()), (CallLimit{Kind::kAnswer, kMaxCallBytes}));
  // The words are the server's, as before.
  EXPECT_THAT(refused.status().message(), HasSubstr("--max-call-bytes"));
  // One name fits: answered, and nothing is marked.
  auto fits = client_->Map({"svc_fns.echo"}, {DocOf(30000)});
  ASSERT_TRUE(fits.ok()) << fits.status();

  // On the wire: the trailer's text, as the README documents it.
  auto stub = v1::Functions::NewStub(
      grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::MapRequest request;
  request.add_functions("svc_fns.echo");
  request.add_functions("svc_fns.echo");
  request.add_docs(DocOf(60000));
  v1::MapResponse response;
  grpc::Status status = stub->Map(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Trailer(context, "cnp-call-limit"), absl::StrCat("answer ", kMaxCallBytes));
  // The mark travels in no other form: no status details are sent.
  EXPECT_EQ(status.error_details(), "");
}

TEST_F(CallLimitTrailerTest, ARequestPastMaxCallBytesRefusedByGrpcIsMarkedByTheClient) {
  auto refused = client_->Map({"svc_fns.echo"}, {DocOf(150000)});
  ASSERT_TRUE(absl::IsResourceExhausted(refused.status())) << refused.status();
  EXPECT_EQ(CallLimitOf(refused.status()), (CallLimit{Kind::kRequest, kMaxCallBytes}));
  EXPECT_EQ(client::ClientLimitOf(refused.status()), std::nullopt);
  EXPECT_THAT(refused.status().message(), HasSubstr("cnp-server's --max-call-bytes"));
}

// The client's own limits (ClientOptions::max_message_bytes) are not the server's: a request
// over it is not sent, an answer over it is refused on this side, and neither is marked as
// the server's limit nor tells the user to raise a server flag.
class ClientLimitTest : public CallLimitTrailerTest {
 protected:
  static constexpr int kClientLimit = 50000;

  void SetUp() override {
    CallLimitTrailerTest::SetUp();
    if (HasFatalFailure()) return;  // no server to connect to: said by the base
    auto limited = client::Client::Connect(
        server_->target(), client::ChannelSecurity{},
        client::ClientOptions{.connect_timeout = absl::Seconds(10),
                              .max_message_bytes = kClientLimit});
    ASSERT_TRUE(limited.ok()) << limited.status();
    limited_ = std::move(*limited);
  }

  void ExpectClientLimit(const absl::Status& status, Kind kind) {
    ASSERT_TRUE(absl::IsResourceExhausted(status)) << status;
    EXPECT_EQ(client::ClientLimitOf(status), (CallLimit{kind, kClientLimit})) << status;
    EXPECT_EQ(CallLimitOf(status), std::nullopt) << status;
    EXPECT_THAT(status.message(), AllOf(HasSubstr("this client's own limit"),
                                        HasSubstr("ClientOptions::max_message_bytes"),
                                        Not(HasSubstr("raise that flag"))));
  }

  std::unique_ptr<client::Client> limited_;
};

TEST_F(ClientLimitTest, ARequestOverTheClientsLimitIsNotSent) {
  // 60 KB: under the server's 100 KB, over this client's 50 KB.
  auto refused = limited_->Map({"svc_fns.echo"}, {DocOf(60000)});
  ExpectClientLimit(refused.status(), Kind::kRequest);
  EXPECT_THAT(refused.status().message(), HasSubstr("nothing was sent"));
  // On stub(), where gRPC refuses it in its own words ("Sent message larger than max").
  grpc::ClientContext context;
  limited_->PrepareContext(context);
  v1::MapRequest request;
  request.add_functions("svc_fns.echo");
  request.add_docs(DocOf(60000));
  v1::MapResponse response;
  absl::Status status =
      limited_->FromGrpc(limited_->stub().Map(&context, request, &response), context);
  ExpectClientLimit(status, Kind::kRequest);
  EXPECT_THAT(status.message(), HasSubstr("Sent message larger than max"));
  EXPECT_THAT(server_->Log(), Not(HasSubstr("larger than max")));
}

TEST_F(ClientLimitTest, AnAnswerOverTheClientsLimitIsRefusedHere) {
  // Two names of a 30 KB document: a 60 KB answer, under the server's 100 KB limit.
  auto refused = limited_->Map({"svc_fns.echo", "svc_fns.echo"}, {DocOf(30000)});
  ExpectClientLimit(refused.status(), Kind::kAnswer);
  EXPECT_THAT(refused.status().message(), HasSubstr("Received message larger than max"));
  // The default client takes it.
  auto answered = client_->Map({"svc_fns.echo", "svc_fns.echo"}, {DocOf(30000)});
  ASSERT_TRUE(answered.ok()) << answered.status();
}

TEST_F(CallLimitTrailerTest, MoreDocumentsThanMaxDocsPerCallCarryThatLimit) {
  auto refused = client_->Map({"svc_fns.echo"},
                              std::vector<std::string>(kMaxDocsPerCall + 1, R"({"_id":"s"})"));
  ASSERT_TRUE(absl::IsResourceExhausted(refused.status())) << refused.status();
  EXPECT_EQ(CallLimitOf(refused.status()), (CallLimit{Kind::kDocuments, kMaxDocsPerCall}));
  auto fits = client_->Map({"svc_fns.echo"},
                           std::vector<std::string>(kMaxDocsPerCall, R"({"_id":"s"})"));
  ASSERT_TRUE(fits.ok()) << fits.status();
}

// A MapStream ended by such a refusal: the status that ends the stream carries the trailer.
TEST_F(CallLimitTrailerTest, AStreamEndedByARefusalCarriesTheTrailer) {
  auto stub = v1::Functions::NewStub(
      grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto stream = stub->MapStream(&context);
  v1::MapRequest fits;
  fits.add_functions("svc_fns.echo");
  fits.add_docs(R"({"_id":"s"})");
  ASSERT_TRUE(stream->Write(fits));
  v1::MapResponse response;
  ASSERT_TRUE(stream->Read(&response));
  v1::MapRequest too_many;
  too_many.add_functions("svc_fns.echo");
  for (int i = 0; i <= kMaxDocsPerCall; ++i) too_many.add_docs(R"({"_id":"s"})");
  ASSERT_TRUE(stream->Write(too_many));
  EXPECT_FALSE(stream->Read(&response));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Trailer(context, "cnp-call-limit"), absl::StrCat("documents ", kMaxDocsPerCall));
}

TEST_F(CallLimitTrailerTest, AFullQueueIsRefusedWithoutAMark) {
  // The one worker held by a Validate that runs for minutes; no call may wait (--max-queue=0).
  auto stub = v1::Functions::NewStub(
      grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials()));
  StartSignal started;
  grpc::ClientContext held_context;
  v1::ValidateRequest held;
  held.set_function("rpc_fns.slow_validate");
  held.set_new_doc(absl::StrCat(R"({"_id":"x","signal":")", started.path(), R"("})"));
  v1::ValidateResponse held_response;
  grpc::Status held_status;
  std::thread holder([&] { held_status = stub->Validate(&held_context, held, &held_response); });
  ASSERT_TRUE(started.Wait(absl::Seconds(60))) << server_->Log();

  auto refused = client_->Map({"svc_fns.echo"}, {R"({"_id":"s"})"});
  EXPECT_TRUE(absl::IsResourceExhausted(refused.status())) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("busy"));
  EXPECT_EQ(CallLimitOf(refused.status()), std::nullopt);

  held_context.TryCancel();
  holder.join();
  EXPECT_EQ(held_status.error_code(), grpc::StatusCode::CANCELLED);
}

}  // namespace
}  // namespace cnp
