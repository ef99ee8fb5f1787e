// The client library pairs each answer with what it asked: results(i) with docs[i] for a Map,
// with functions[i] for a Reduce. An answer with another count (a server of another version, a
// broken proxy) is refused, never read past either end.
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/lib/cnp_client.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace cnp {
namespace {

using ::testing::HasSubstr;

// Answers every Map and Reduce with one result, whatever was asked.
class OneResultService final : public v1::Functions::Service {
 public:
  grpc::Status Map(grpc::ServerContext*, const v1::MapRequest*,
                   v1::MapResponse* response) override {
    response->add_results()->set_rows("[]");
    return grpc::Status::OK;
  }
  grpc::Status Reduce(grpc::ServerContext*, const v1::ReduceRequest*,
                      v1::ReduceResponse* response) override {
    response->add_results("1");
    return grpc::Status::OK;
  }
};

class AnswerCountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/cnp-answer-count-test.XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    const std::string target = absl::StrCat("unix:", dir_, "/cnp.sock");
    grpc::ServerBuilder builder;
    builder.AddListeningPort(target, grpc::InsecureServerCredentials());
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    absl::StatusOr<std::unique_ptr<client::Client>> client = client::Client::Connect(target);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  OneResultService service_;
  std::string dir_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(AnswerCountTest, AMapAnsweredForAnotherNumberOfDocumentsIsRefused) {
  EXPECT_TRUE(client_->Map({"m.f"}, {R"({"_id":"a"})"}).ok());
  absl::StatusOr<v1::MapResponse> two = client_->Map({"m.f"}, {R"({"_id":"a"})", R"({"_id":"b"})"});
  EXPECT_TRUE(absl::IsInternal(two.status())) << two.status();
  EXPECT_THAT(two.status().message(), HasSubstr("a Map of 2 documents with 1 results"));
}

TEST_F(AnswerCountTest, AReduceAnsweredForAnotherNumberOfFunctionsIsRefused) {
  EXPECT_TRUE(client_->Reduce({"m.f"}, "[]", /*rereduce=*/false).ok());
  absl::StatusOr<v1::ReduceResponse> two = client_->Reduce({"m.f", "m.g"}, "[]", false);
  EXPECT_TRUE(absl::IsInternal(two.status())) << two.status();
  EXPECT_THAT(two.status().message(), HasSubstr("a Reduce of 2 functions with 1 results"));
}

}  // namespace
}  // namespace cnp
