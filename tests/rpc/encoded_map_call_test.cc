// Map as gRPC carries it, for a coroutine handler: the request's slices are read as one (a
// document may straddle two), the answer leaves as one message made of the call's chunks, and
// an error or a cancellation becomes the gRPC status with no message.
#include "service/rpc/encoded_map_call.h"

#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "gtest/gtest.h"
#include "tests/support/fake_task_runner.h"

namespace cnp::rpc {
namespace {

using pool::Reply;
using pool::Task;
using testing::FakeAnswer;
using testing::FakeTaskRunner;

FakeAnswer EchoMap(const Task& task) {
  Reply reply;
  reply.mutable_map();  // a worker answers a Map of no documents with a Map of no results
  for (const std::string& doc : task.map().docs()) reply.mutable_map()->add_results()->set_rows(doc);
  return {reply};
}

v1::MapRequest RequestOf(int docs) {
  v1::MapRequest request;
  request.add_functions("views.by_id");
  for (int i = 0; i < docs; ++i) request.add_docs(absl::StrCat(R"({"_id":"d)", i, R"("})"));
  return request;
}

// `bytes` as gRPC may deliver them: in slices of `slice_bytes`, cut anywhere.
grpc::ByteBuffer Sliced(const std::string& bytes, size_t slice_bytes) {
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < bytes.size(); at += slice_bytes) {
    slices.emplace_back(bytes.substr(at, slice_bytes));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

std::string Flat(grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return bytes;
}

class EncodedMapCallTest : public ::testing::Test {
 protected:
  absl::Status Serve(calls::FunctionCalls& calls, grpc::ByteBuffer& request,
                     grpc::ByteBuffer& response) {
    std::optional<absl::Status> result;
    std::exception_ptr thrown;
    asio::co_spawn(io_, ServeEncodedMap(calls, absl::InfiniteFuture(), request, response),
                   asio::bind_cancellation_slot(
                       cancel_.slot(), [&](std::exception_ptr error, absl::Status status) {
                         thrown = error;
                         result = std::move(status);
                       }));
    io_.run();
    io_.restart();
    if (thrown) std::rethrow_exception(thrown);
    return result.value_or(absl::UnknownError("never completed"));
  }

  asio::io_context io_;
  asio::cancellation_signal cancel_;
};

TEST_F(EncodedMapCallTest, ReadsSlicedRequestsAndAnswersInOneMessage) {
  FakeTaskRunner runner(2, EchoMap);
  calls::FunctionCalls calls(runner, {.min_docs_per_task = 4, .max_docs_per_task = 10});
  const v1::MapRequest sent = RequestOf(500);
  grpc::ByteBuffer request = Sliced(sent.SerializeAsString(), 7);
  grpc::ByteBuffer response;

  const absl::Status status = Serve(calls, request, response);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(request.Length(), 0u);  // consumed as soon as it was read
  v1::MapResponse answer;
  ASSERT_TRUE(answer.ParseFromString(Flat(response)));
  ASSERT_EQ(answer.results_size(), sent.docs_size());
  for (int i = 0; i < sent.docs_size(); ++i) EXPECT_EQ(answer.results(i).rows(), sent.docs(i));
  EXPECT_GT(runner.batches().size(), 1u);
}

TEST_F(EncodedMapCallTest, AMapOfNoDocumentsIsAnEmptyMessageNotNone) {
  FakeTaskRunner runner(2, EchoMap);
  calls::FunctionCalls calls(runner, {});
  grpc::ByteBuffer request = Sliced(RequestOf(0).SerializeAsString(), 64);
  grpc::ByteBuffer response;

  const absl::Status status = Serve(calls, request, response);
  ASSERT_TRUE(status.ok()) << status;
  // A ByteBuffer that is not Valid() is no message: the client's call fails with "No message
  // returned for unary request".
  EXPECT_TRUE(response.Valid());
  v1::MapResponse answer;
  ASSERT_TRUE(answer.ParseFromString(Flat(response)));
  EXPECT_EQ(answer.results_size(), 0);
}

TEST_F(EncodedMapCallTest, AnErrorIsTheStatusWithNoMessage) {
  FakeTaskRunner runner(2, EchoMap);
  calls::FunctionCalls calls(runner, {.max_docs_per_call = 10});
  grpc::ByteBuffer request = Sliced(RequestOf(11).SerializeAsString(), 64);
  grpc::ByteBuffer response;

  const absl::Status status = Serve(calls, request, response);
  EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
  EXPECT_EQ(status.message(),
            "the request holds 11 documents, more than the 10 one call may carry; split the "
            "batch, or raise cnp-server's --max-docs-per-call");
  EXPECT_EQ(response.Length(), 0u);
}

TEST_F(EncodedMapCallTest, ACancelledCallIsCancelled) {
  FakeTaskRunner runner(2, [](const Task& task) {
    FakeAnswer answer = EchoMap(task);
    answer.delay = absl::Minutes(1);
    return answer;
  });
  runner.set_on_start([this, first = true](const Task&) mutable {
    if (std::exchange(first, false)) {
      asio::post(io_, [this] { cancel_.emit(asio::cancellation_type::terminal); });
    }
  });
  calls::FunctionCalls calls(runner, {.min_docs_per_task = 4, .max_docs_per_task = 10});
  grpc::ByteBuffer request = Sliced(RequestOf(1'000).SerializeAsString(), 4096);
  grpc::ByteBuffer response;

  const absl::Status status = Serve(calls, request, response);
  EXPECT_TRUE(absl::IsCancelled(status)) << status;
  EXPECT_EQ(response.Length(), 0u);
  EXPECT_EQ(runner.batches().size(), 1u);
}

}  // namespace
}  // namespace cnp::rpc
