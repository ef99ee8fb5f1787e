// The stateless calls' request logic, over a scripted pool (FakeTaskRunner): what each call
// refuses before any task runs, how a large Map is cut into parts and waves and put back in
// document order, that a call never answers with part of a result, the response size cap,
// cancellation (a cancelled Map starts no further wave), deadlines, and function-error counts.
#include "service/calls/function_calls.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "common/call_limit.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/calls/encoded_map_request.h"
#include "service/metrics/registry.h"
#include "tests/support/fake_task_runner.h"

namespace cnp::calls {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;
using pool::Reply;
using pool::Task;
using testing::FakeAnswer;
using testing::FakeTaskRunner;
using testing::FailureReply;

// A document whose bytes say which it is; every tenth one is not even UTF-8 (nor JSON past its
// first byte), since documents are bytes and must reach the worker as they came.
std::string Doc(int i) {
  if (i % 10 == 9) return absl::StrCat("{\xff\xfe", i, std::string("\0raw", 4));
  return absl::StrCat(R"({"_id":"d)", i, R"("})");
}

// A worker that maps every document to a result holding the document's own bytes.
FakeAnswer EchoMap(const Task& task) {
  Reply reply;
  for (const std::string& doc : task.map().docs()) reply.mutable_map()->add_results()->set_rows(doc);
  return {reply};
}

v1::MapRequest MapRequestOf(int docs) {
  v1::MapRequest request;
  request.add_functions("views.by_id");
  for (int i = 0; i < docs; ++i) request.add_docs(Doc(i));
  return request;
}

// The chunks MapEncoded appends, read back as the one MapResponse they concatenate into.
v1::MapResponse Parsed(const std::vector<std::string>& chunks) {
  std::string bytes;
  for (const std::string& chunk : chunks) bytes += chunk;
  v1::MapResponse response;
  EXPECT_TRUE(response.ParseFromString(bytes));
  return response;
}

// Map as the transport serves it (FunctionCalls::MapEncoded), from a MapRequest into the
// MapResponse its chunks make, for tests that build and read typed messages.
asio::awaitable<absl::Status> MapTyped(FunctionCalls& calls, const v1::MapRequest& request,
                                       absl::Time deadline, v1::MapResponse& response) {
  const std::string bytes = request.SerializeAsString();
  std::vector<std::string> chunks;
  const absl::Status status = co_await calls.MapEncoded(bytes, deadline, chunks);
  response = Parsed(chunks);
  co_return status;
}

void ExpectEchoedInOrder(const v1::MapResponse& response, int docs) {
  ASSERT_EQ(response.results_size(), docs);
  for (int i = 0; i < docs; ++i) EXPECT_EQ(response.results(i).rows(), Doc(i)) << "document " << i;
}

class FunctionCallsTest : public ::testing::Test {
 protected:
  // Awaits `call` on the test's io_context, as a handler would; cancel_ cancels it.
  absl::Status Await(asio::awaitable<absl::Status> call) {
    std::optional<absl::Status> result;
    std::exception_ptr thrown;
    asio::co_spawn(io_, std::move(call),
                   asio::bind_cancellation_slot(
                       cancel_.slot(), [&](std::exception_ptr error, absl::Status status) {
                         thrown = error;
                         result = std::move(status);
                       }));
    io_.run();
    io_.restart();
    if (thrown) std::rethrow_exception(thrown);
    EXPECT_TRUE(result.has_value());
    return result.value_or(absl::UnknownError("the call never completed"));
  }

  void CancelLater() {
    asio::post(io_, [this] { cancel_.emit(asio::cancellation_type::terminal); });
  }

  asio::io_context io_;
  asio::cancellation_signal cancel_;
};

// --- what each call refuses before any task runs -----------------------------------------

TEST_F(FunctionCallsTest, EveryCallRefusesARequestNamingNoFunction) {
  FakeTaskRunner runner(2, EchoMap);
  FunctionCalls calls(runner, {});
  const absl::Time deadline = absl::InfiniteFuture();

  v1::MapRequest no_functions;
  no_functions.add_docs(Doc(0));
  std::vector<std::string> chunks;
  v1::ReduceRequest reduce_request;
  v1::ReduceResponse reduce;
  v1::ValidateRequest validate_request;
  v1::ValidateResponse validate;
  v1::DesignFunctionRequest design_request;
  design_request.set_kind(v1::UPDATE);
  v1::DesignFunctionResponse design;
  v1::ResolveRequest resolve_request;
  v1::ResolveResponse resolve;

  for (const absl::Status& status : {
           Await(calls.MapEncoded(no_functions.SerializeAsString(), deadline, chunks)),
           Await(calls.Reduce(reduce_request, deadline, reduce)),
           Await(calls.Validate(validate_request, deadline, validate)),
           Await(calls.CallDesignFunction(design_request, deadline, design)),
           Await(calls.Resolve(resolve_request, deadline, resolve)),
       }) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(status.message(), "the request names no function");
  }
  EXPECT_THAT(runner.started(), IsEmpty());
}

TEST_F(FunctionCallsTest, DesignFunctionMustSayItsKind) {
  FakeTaskRunner runner(2, EchoMap);
  FunctionCalls calls(runner, {});
  v1::DesignFunctionRequest request;
  request.set_function("design.update");
  v1::DesignFunctionResponse response;
  const absl::Status status = Await(calls.CallDesignFunction(request, absl::InfiniteFuture(), response));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("which kind of design function"));
  EXPECT_THAT(runner.started(), IsEmpty());
}

TEST_F(FunctionCallsTest, MapEncodedRefusesBytesThatAreNoMapRequest) {
  FakeTaskRunner runner(2, EchoMap);
  FunctionCalls calls(runner, {});
  std::vector<std::string> chunks;
  // A truncated request: the last document's length says more bytes than there are.
  std::string truncated = MapRequestOf(3).SerializeAsString();
  truncated.pop_back();
  // A function name that is not UTF-8 (the field is a string).
  v1::MapRequest bad_name;
  bad_name.add_docs(Doc(0));
  std::string bad_name_bytes = bad_name.SerializeAsString();
  bad_name_bytes += std::string("\x0a\x02\xff\xfe", 4);  // field 1 (functions), 2 bytes

  // Each answer says what was wrong (for the name, what protobuf said of it, not in the log).
  const std::pair<std::string, std::string> cases[] = {
      {truncated, "cut short, or not protobuf at all"},
      {bad_name_bytes, "String field 'cnp.v1.MapRequest.functions' contains invalid UTF-8"}};
  for (const auto& [bytes, reason] : cases) {
    const absl::Status status = Await(calls.MapEncoded(bytes, absl::InfiniteFuture(), chunks));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    const std::string message(status.message());
    EXPECT_THAT(message, StartsWith("the Map request is not a valid cnp.v1.MapRequest: "));
    EXPECT_THAT(message, HasSubstr(reason));
  }
  EXPECT_THAT(runner.started(), IsEmpty());
}

TEST_F(FunctionCallsTest, MapRefusesMoreDocumentsThanACallMayCarry) {
  FakeTaskRunner runner(2, EchoMap);
  FunctionCalls calls(runner, {.max_docs_per_call = 5});
  std::vector<std::string> chunks;

  for (const absl::Status& status : {
           Await(calls.MapEncoded(MapRequestOf(6).SerializeAsString(), absl::InfiniteFuture(),
                                  chunks)),
       }) {
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(status.message(),
              "the request holds 6 documents, more than the 5 one call may carry; split the "
              "batch, or raise cnp-server's --max-docs-per-call");
    EXPECT_EQ(CallLimitOf(status), (CallLimit{CallLimit::Kind::kDocuments, 5}));
  }
  EXPECT_THAT(runner.started(), IsEmpty());

  // Five is allowed.
  EXPECT_TRUE(Await(calls.MapEncoded(MapRequestOf(5).SerializeAsString(), absl::InfiniteFuture(),
                                     chunks))
                  .ok());
}

// Every part of a Map carries the call's function names again: 5,000,000 names of "a.b" and
// 1,024 documents took a server to 4.68 GB (a security review). A Map (unary or a MapStream
// message) or a Reduce names at most 4,096, refused past that as the other size limits are.
TEST_F(FunctionCallsTest, MapAndReduceRefuseMoreFunctionsThanACallMayName) {
  FakeTaskRunner runner(2, [](const Task& task) {
    if (task.has_map()) return EchoMap(task);
    Reply reply;
    reply.mutable_reduce();
    return FakeAnswer{reply};
  });
  FunctionCalls calls(runner, {.min_docs_per_task = 4});
  auto map_naming = [](int functions) {
    v1::MapRequest request = MapRequestOf(100);
    request.clear_functions();
    for (int f = 0; f < functions; ++f) request.add_functions(absl::StrCat("views.f", f));
    return request;
  };
  auto reduce_naming = [](int functions) {
    v1::ReduceRequest request;
    for (int f = 0; f < functions; ++f) request.add_functions(absl::StrCat("views.r", f));
    request.set_kvs("[]");
    return request;
  };
  std::vector<std::string> chunks;
  v1::MapRequest map = map_naming(kMaxFunctionsPerCall + 1);
  v1::MapResponse map_response;
  v1::ReduceRequest reduce = reduce_naming(kMaxFunctionsPerCall + 1);
  v1::ReduceResponse reduce_response;
  for (const absl::Status& status : {
           Await(calls.MapEncoded(map_naming(kMaxFunctionsPerCall + 1).SerializeAsString(),
                                  absl::InfiniteFuture(), chunks)),
           Await(calls.Reduce(reduce, absl::InfiniteFuture(), reduce_response)),
       }) {
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
    EXPECT_EQ(status.message(),
              "the request names more than the 4096 functions one call may name; split them "
              "over several calls");
    EXPECT_EQ(CallLimitOf(status), (CallLimit{CallLimit::Kind::kFunctions, 4096}));
  }
  EXPECT_THAT(runner.started(), IsEmpty());

  // 4,096 are allowed, and every part carries them.
  ASSERT_TRUE(Await(calls.MapEncoded(map_naming(kMaxFunctionsPerCall).SerializeAsString(),
                                     absl::InfiniteFuture(), chunks))
                  .ok());
  map = map_naming(kMaxFunctionsPerCall);
  ASSERT_TRUE(Await(MapTyped(calls, map, absl::InfiniteFuture(), map_response)).ok());
  reduce = reduce_naming(kMaxFunctionsPerCall);
  ASSERT_TRUE(Await(calls.Reduce(reduce, absl::InfiniteFuture(), reduce_response)).ok());
  ASSERT_GT(runner.started().size(), 2u);
  for (const Task& task : runner.started()) {
    EXPECT_EQ(task.has_map() ? task.map().functions_size() : task.reduce().functions_size(),
              kMaxFunctionsPerCall);
  }
}

// A Resolve is bounded as a Map is: each name is an entry the worker builds and answers. Before,
// a 66 MB Resolve of 3.9 million names reached a worker, which grew to 1.37 GB building its
// answer before finding it too large.
TEST_F(FunctionCallsTest, ResolveRefusesMoreFunctionsThanACallMayName) {
  FakeTaskRunner runner(1, [](const Task& task) {
    Reply reply;
    for (const std::string& name : task.resolve().functions()) {
      reply.mutable_resolve()->add_functions()->set_function(name);
    }
    return FakeAnswer{reply};
  });
  FunctionCalls calls(runner, {});
  auto naming = [](int functions) {
    v1::ResolveRequest request;
    for (int f = 0; f < functions; ++f) request.add_functions(absl::StrCat("views.f", f));
    return request;
  };
  v1::ResolveRequest request = naming(kMaxFunctionsPerCall + 1);
  v1::ResolveResponse response;
  const absl::Status refused = Await(calls.Resolve(request, absl::InfiniteFuture(), response));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_EQ(refused.message(),
            "the request names more than the 4096 functions one call may name; split them over "
            "several calls");
  EXPECT_EQ(CallLimitOf(refused), (CallLimit{CallLimit::Kind::kFunctions, 4096}));
  EXPECT_THAT(runner.started(), IsEmpty());

  // 4,096 are allowed; a name too long is not the call's error but its own entry's, which the
  // worker answers (cnp check reports each name).
  request = naming(kMaxFunctionsPerCall);
  request.set_functions(0, std::string(kMaxFunctionNameBytes + 1, 'a'));
  ASSERT_TRUE(Await(calls.Resolve(request, absl::InfiniteFuture(), response)).ok());
  ASSERT_EQ(runner.started().size(), 1u);
  EXPECT_EQ(runner.started()[0].resolve().functions_size(), kMaxFunctionsPerCall);
  EXPECT_EQ(response.functions_size(), kMaxFunctionsPerCall);
}

// The scan of a unary Map's bytes stops at the name past the limit: millions of names are not
// copied out of the request to be counted.
TEST(EncodedMapRequestTest, StopsAtTheNamePastTheLimit) {
  v1::MapRequest request;
  for (int f = 0; f < 10; ++f) request.add_functions(absl::StrCat("views.f", f));
  request.add_docs("{}");
  const std::string bytes = request.SerializeAsString();
  EncodedMapRequest scan(bytes, 3);
  std::vector<std::string> functions;
  EXPECT_EQ(scan.Next(&functions), std::nullopt);
  EXPECT_TRUE(scan.too_many_functions());
  EXPECT_FALSE(scan.failed());
  EXPECT_EQ(functions.size(), 3u);
}

// ...and each name at most as long as a worker accepts (512 bytes), so that the names every
// part carries are bounded in bytes too (a name of 16 KiB, 4,096 times, in each of 16 parts
// would be 1 GiB).
TEST_F(FunctionCallsTest, MapAndReduceRefuseANameLongerThanAWorkerAccepts) {
  FakeTaskRunner runner(2, EchoMap);
  FunctionCalls calls(runner, {});
  const std::string long_name = "views." + std::string(kMaxFunctionNameBytes - 5, 'f');
  v1::MapRequest map = MapRequestOf(3);
  map.add_functions(long_name);
  const std::string map_bytes = map.SerializeAsString();
  v1::ReduceRequest reduce;
  reduce.add_functions("views.total");
  reduce.add_functions(long_name);
  reduce.set_kvs("[]");
  v1::ReduceResponse reduce_response;
  std::vector<std::string> chunks;
  for (const absl::Status& status : {
           Await(calls.MapEncoded(map_bytes, absl::InfiniteFuture(), chunks)),
           Await(calls.Reduce(reduce, absl::InfiniteFuture(), reduce_response)),
       }) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_EQ(status.message(),
              "function 1 of the request: ValueError: function name too long: 513 bytes, at "
              "most 512 allowed");
  }
  EXPECT_THAT(runner.started(), IsEmpty());
}

// The API says each of a Map's documents, and a Validate's new_doc, is a JSON object, as
// CouchDB's always are: `5` or `[1,2]` reached the function, whose AttributeError came back as
// data (an API review). Refused, naming the document; the rest of the JSON is the worker's to
// read. (CouchDB's own path, a Session, passes on what CouchDB sends, as couchjs does.)
TEST_F(FunctionCallsTest, DocumentsThatAreNoJsonObjectsAreRefused) {
  FakeTaskRunner runner(2, [](const Task& task) {
    if (task.has_map()) return EchoMap(task);
    Reply reply;
    reply.mutable_validate();
    return FakeAnswer{reply};
  });
  FunctionCalls calls(runner, {.min_docs_per_task = 4});
  std::vector<std::string> chunks;
  for (const std::string& bad : {std::string("5"), std::string("[1,2]"), std::string(" \n[]"),
                                 std::string("\"text\""), std::string("null"), std::string()}) {
    v1::MapRequest request = MapRequestOf(100);
    *request.mutable_docs(42) = bad;
    for (const absl::Status& status : {
             Await(calls.MapEncoded(request.SerializeAsString(), absl::InfiniteFuture(), chunks)),
         }) {
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
      EXPECT_THAT(std::string(status.message()), StartsWith("document 42 is not a JSON object: "));
    }
  }
  v1::MapRequest array = MapRequestOf(1);
  *array.mutable_docs(0) = "[1,2]";
  v1::MapResponse response;
  EXPECT_EQ(Await(MapTyped(calls, array, absl::InfiniteFuture(), response)).message(),
            "document 0 is not a JSON object: [1,2] (each document of a Map is one)");

  v1::ValidateRequest validate;
  validate.set_function("checks.author");
  validate.set_new_doc("[]");
  v1::ValidateResponse validated;
  absl::Status status = Await(calls.Validate(validate, absl::InfiniteFuture(), validated));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "the new_doc is not a JSON object: [] (it is the document being written)");
  validate.set_new_doc("");
  status = Await(calls.Validate(validate, absl::InfiniteFuture(), validated));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("no new_doc: it is required"));
  // The others are objects, or null where there may be none (found by an API probe: a user_ctx
  // of 5 and a sec_obj of "s" were run).
  validate.set_new_doc("{}");
  validate.set_user_ctx("5");
  status = Await(calls.Validate(validate, absl::InfiniteFuture(), validated));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "the user_ctx is not a JSON object: 5 (it is the user writing, or null)");
  validate.set_user_ctx(" null ");
  validate.set_sec_obj("null");
  status = Await(calls.Validate(validate, absl::InfiniteFuture(), validated));
  EXPECT_EQ(status.message(), "the sec_obj is not a JSON object: null (it is the database's "
                              "_security object)");
  validate.set_sec_obj("\"s\"");
  status = Await(calls.Validate(validate, absl::InfiniteFuture(), validated));
  EXPECT_THAT(std::string(status.message()),
              StartsWith("the sec_obj is not a JSON object: \"s\""));
  validate.set_sec_obj("");
  validate.set_old_doc("[1]");
  status = Await(calls.Validate(validate, absl::InfiniteFuture(), validated));
  EXPECT_THAT(std::string(status.message()), StartsWith("the old_doc is not a JSON object: [1]"));
  validate.clear_old_doc();
  validate.clear_user_ctx();
  EXPECT_THAT(runner.started(), IsEmpty());

  // JSON's whitespace before the object is JSON.
  v1::MapRequest spaced = MapRequestOf(2);
  *spaced.mutable_docs(1) = " \t\r\n{}";
  EXPECT_TRUE(Await(calls.MapEncoded(spaced.SerializeAsString(), absl::InfiniteFuture(), chunks))
                  .ok());
  validate.set_function("checks.author");
  validate.set_new_doc("\n{}");
  EXPECT_TRUE(Await(calls.Validate(validate, absl::InfiniteFuture(), validated)).ok());
}

// Found by a review: the document id kept for a failed call's log line was read with
// rapidjson's recursive parser, so a new_doc nested ten million arrays deep overflowed the
// gRPC thread's stack and took the whole server down before any worker saw it. Read without
// recursion, the call reaches the worker, whose own reader refuses such nesting.
TEST_F(FunctionCallsTest, ADeeplyNestedDocumentDoesNotOverflowTheCallersStack) {
  FakeTaskRunner runner(1, [](const Task&) {
    Reply reply;
    reply.mutable_validate();
    return FakeAnswer{reply};
  });
  FunctionCalls calls(runner, {});
  constexpr size_t kDepth = 10'000'000;
  v1::ValidateRequest validate;
  validate.set_function("checks.author");
  validate.set_new_doc(absl::StrCat(R"({"a":)", std::string(kDepth, '['), std::string(kDepth, ']'),
                                    R"(,"_id":"deep"})"));
  v1::ValidateResponse validated;
  EXPECT_TRUE(Await(calls.Validate(validate, absl::InfiniteFuture(), validated)).ok());
  EXPECT_EQ(runner.started().size(), 1u);
}

// --- splitting, waves and order ------------------------------------------------------------

TEST_F(FunctionCallsTest, MapEncodedCutsALargeBatchIntoWavesAndKeepsDocumentOrder) {
  FakeTaskRunner runner(2, EchoMap);
  const CallOptions options{.min_docs_per_task = 4, .max_docs_per_task = 10};
  FunctionCalls calls(runner, options);
  constexpr int kDocs = 1001;
  std::vector<std::string> chunks;
  ASSERT_TRUE(Await(calls.MapEncoded(MapRequestOf(kDocs).SerializeAsString(),
                                     absl::InfiniteFuture(), chunks))
                  .ok());
  ExpectEchoedInOrder(Parsed(chunks), kDocs);

  // Parts of at most max_docs_per_task documents, each naming the functions; the parts run a
  // wave of at most four per worker at a time, every wave but the last a full one.
  int docs = 0;
  for (const Task& task : runner.started()) {
    EXPECT_THAT(task.map().functions(), ElementsAre("views.by_id"));
    EXPECT_GE(task.map().docs_size(), 1);
    EXPECT_LE(task.map().docs_size(), options.max_docs_per_task);
    docs += task.map().docs_size();
  }
  EXPECT_EQ(docs, kDocs);
  const size_t wave = 4 * runner.size();
  ASSERT_GT(runner.batches().size(), 1u);
  for (size_t i = 0; i + 1 < runner.batches().size(); ++i) EXPECT_EQ(runner.batches()[i], wave);
  EXPECT_LE(runner.batches().back(), wave);
}

TEST_F(FunctionCallsTest, MapEncodedTellsItsAnswerAsItGrowsAndStopsWhenRefused) {
  FakeTaskRunner runner(2, EchoMap);
  const CallOptions options{.min_docs_per_task = 4, .max_docs_per_task = 10};
  FunctionCalls calls(runner, options);
  constexpr int kDocs = 400;  // 40 parts
  const std::string request = MapRequestOf(kDocs).SerializeAsString();

  // Served whole, the answer's bytes told as they grow: after each part's, and before each
  // wave, what the wave is expected to add. The last told is at least the whole answer.
  std::vector<int64_t> told;
  std::vector<std::string> chunks;
  ASSERT_TRUE(Await(calls.MapEncoded(request, absl::InfiniteFuture(), chunks,
                                     [&told](int64_t bytes) {
                                       told.push_back(bytes);
                                       return absl::OkStatus();
                                     }))
                  .ok());
  ExpectEchoedInOrder(Parsed(chunks), kDocs);
  int64_t answer = 0;
  for (const std::string& chunk : chunks) answer += static_cast<int64_t>(chunk.size());
  ASSERT_FALSE(told.empty());
  EXPECT_GE(told.back(), answer);
  // Nothing says yet how much a document answers: the first wave is one part per worker.
  ASSERT_GT(runner.batches().size(), 2u);
  EXPECT_EQ(runner.batches()[0], runner.size());
  EXPECT_EQ(runner.batches()[1], 4 * runner.size());
  // Before the second wave ran, about what it added was asked for (documents here answer
  // about the same bytes each).
  const int64_t after_first = told[runner.size() - 1];
  const int64_t before_second = told[runner.size()];
  EXPECT_GT(before_second, 3 * after_first);
  EXPECT_LT(before_second, 7 * after_first);

  // Within a wave, what was asked for before it ran stays asked for until the wave is in (its
  // replies are all held until then).
  for (int i = runner.size(); i < 5 * runner.size(); ++i) {
    EXPECT_GE(told[i + 1], told[runner.size()]) << i;
  }

  // Refused once it passes a budget: the call ends with that status, no answer, and the waves
  // after the refusal never run.
  FakeTaskRunner refusing(2, EchoMap);
  FunctionCalls limited(refusing, options);
  chunks.clear();
  const absl::Status status = Await(limited.MapEncoded(
      request, absl::InfiniteFuture(), chunks, [answer](int64_t bytes) {
        return bytes > answer / 4 ? absl::ResourceExhaustedError("over the budget")
                                  : absl::OkStatus();
      }));
  EXPECT_EQ(status, absl::ResourceExhaustedError("over the budget"));
  EXPECT_THAT(chunks, IsEmpty());
  EXPECT_LT(refusing.started().size(), 20u);

  // A first wave that answers far more per document than the rest asks for no more than a call
  // may answer: a call that fits is not refused on a guess.
  FakeTaskRunner skewed(2, [](const Task& task) {
    Reply reply;
    for (const std::string& doc : task.map().docs()) {
      reply.mutable_map()->add_results()->set_rows(doc == Doc(0) ? std::string(4000, 'x') : doc);
    }
    return FakeAnswer{reply};
  });
  FunctionCalls capped(skewed, CallOptions{.min_docs_per_task = 4, .max_docs_per_task = 10,
                                           .max_call_bytes = 20'000});
  told.clear();
  chunks.clear();
  ASSERT_TRUE(Await(capped.MapEncoded(request, absl::InfiniteFuture(), chunks,
                                      [&told](int64_t bytes) {
                                        told.push_back(bytes);
                                        return absl::OkStatus();
                                      }))
                  .ok());
  for (int64_t bytes : told) EXPECT_LE(bytes, 20'000);
}

TEST_F(FunctionCallsTest, MapEncodedCutsLargeDocumentsByBytes) {
  FakeTaskRunner runner(2, EchoMap);
  FunctionCalls calls(runner, {});
  v1::MapRequest request;
  request.add_functions("views.by_id");
  for (char c : {'a', 'b', 'c'}) request.add_docs("{" + std::string((3 << 20) - 1, c));  // 3 MiB each
  std::vector<std::string> chunks;
  ASSERT_TRUE(
      Await(calls.MapEncoded(request.SerializeAsString(), absl::InfiniteFuture(), chunks)).ok());

  // Three documents of 3 MiB make three parts (parts stay near 4 MiB), not one.
  ASSERT_EQ(runner.started().size(), 3u);
  for (const Task& task : runner.started()) EXPECT_EQ(task.map().docs_size(), 1);
  const v1::MapResponse response = Parsed(chunks);
  ASSERT_EQ(response.results_size(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(response.results(i).rows(), request.docs(i));
  // The response comes in chunks of a few MiB rather than one growing string.
  EXPECT_GT(chunks.size(), 1u);
}

TEST_F(FunctionCallsTest, MapSplitsOverTheWorkersAndKeepsDocumentOrder) {
  // Later parts answer first: the results are still in document order.
  FakeTaskRunner runner(2, [](const Task& task) {
    FakeAnswer answer = EchoMap(task);
    answer.delay = absl::Milliseconds(task.map().docs_size() > 0 && task.map().docs(0) == Doc(0)
                                          ? 20
                                          : 0);
    return answer;
  });
  FunctionCalls calls(runner, {.min_docs_per_task = 4});
  constexpr int kDocs = 100;
  v1::MapRequest request = MapRequestOf(kDocs);
  v1::MapResponse response;
  ASSERT_TRUE(Await(MapTyped(calls, request, absl::InfiniteFuture(), response)).ok());
  ExpectEchoedInOrder(response, kDocs);
  // One RunAll of four parts per worker.
  EXPECT_THAT(runner.batches(), ElementsAre(8u));
}

TEST_F(FunctionCallsTest, SmallMapIsOneTask) {
  FakeTaskRunner runner(2, EchoMap);
  FunctionCalls calls(runner, {});
  v1::MapRequest request = MapRequestOf(3);
  v1::MapResponse response;
  ASSERT_TRUE(Await(MapTyped(calls, request, absl::InfiniteFuture(), response)).ok());
  ExpectEchoedInOrder(response, 3);
  EXPECT_THAT(runner.batches(), ElementsAre(1u));
}

// --- never a partial result ------------------------------------------------------------------

// A worker that fails the part holding document `failing`, with `reply`.
FakeTaskRunner::Script FailingPart(int failing, absl::StatusOr<Reply> reply) {
  return [failing, reply](const Task& task) {
    for (const std::string& doc : task.map().docs()) {
      if (doc == Doc(failing)) return FakeAnswer{reply};
    }
    return EchoMap(task);
  };
}

Reply NamedFailure(worker::v1::Failure::Code code, std::string function, std::string message) {
  Reply reply = FailureReply(code, std::move(message));
  reply.mutable_failure()->set_function(std::move(function));
  return reply;
}

TEST_F(FunctionCallsTest, MapEncodedNeverAnswersWithPartOfAResult) {
  const CallOptions options{.min_docs_per_task = 4, .max_docs_per_task = 10};
  struct Case {
    absl::StatusOr<Reply> reply;
    absl::StatusCode code;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           // A part that failed names its documents among the call's (Doc(150) is the 151st).
           {absl::UnavailableError("the worker crashed"), absl::StatusCode::kUnavailable,
            "documents 151-160 of the call's 300: the worker crashed"},
           {FailureReply(worker::v1::Failure::VERSION_MISMATCH,
                         "ValueError: Loaded version 556 did not match expected version 2"),
            absl::StatusCode::kFailedPrecondition,
            "ValueError: Loaded version 556 did not match expected version 2"},
           {FailureReply(worker::v1::Failure::PERMISSION_DENIED, "module refused"),
            absl::StatusCode::kPermissionDenied, "module refused"},
           // A call names several functions: the one that failed to load is named first.
           {NamedFailure(worker::v1::Failure::VERSION_MISMATCH, "revmod.townmap",
                         "ValueError: Loaded version 1 did not match expected version None"),
            absl::StatusCode::kFailedPrecondition,
            "revmod.townmap: ValueError: Loaded version 1 did not match expected version None"},
       }) {
    // The failing part is in the second wave, after the first one's results were appended.
    FakeTaskRunner runner(2, FailingPart(150, c.reply));
    FunctionCalls calls(runner, options);
    std::vector<std::string> chunks;
    const absl::Status status = Await(
        calls.MapEncoded(MapRequestOf(300).SerializeAsString(), absl::InfiniteFuture(), chunks));
    EXPECT_EQ(status.code(), c.code);
    EXPECT_EQ(status.message(), c.message);
    EXPECT_THAT(chunks, IsEmpty());
    EXPECT_GT(runner.batches().size(), 1u);
  }
}

TEST_F(FunctionCallsTest, MapNeverAnswersWithPartOfAResult) {
  FakeTaskRunner runner(2, FailingPart(90, absl::UnavailableError("the worker crashed")));
  FunctionCalls calls(runner, {.min_docs_per_task = 4});
  v1::MapRequest request = MapRequestOf(100);
  v1::MapResponse response;
  const absl::Status status = Await(MapTyped(calls, request, absl::InfiniteFuture(), response));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(response.results_size(), 0);
  // Doc(90) is the 91st of 100, in the part that crashed.
  EXPECT_THAT(status.message(), HasSubstr(" of the call's 100: the worker crashed"));
  int first = 0, last = 0;
  ASSERT_EQ(std::sscanf(std::string(status.message()).c_str(), "documents %d-%d", &first, &last),
            2)
      << status;
  EXPECT_LE(first, 91);
  EXPECT_GE(last, 91);
  EXPECT_LT(last - first, 99);
}

// The pool stops a batch at the part that failed and answers at once: the parts still running
// or never run come back marked as not run, with the same status (pool::NotRunInBatch). The call
// names the part that failed, not the first one in order.
TEST_F(FunctionCallsTest, AFailedBatchIsNamedByThePartThatFailedNotOneLeftUnrun) {
  const absl::Status crashed = absl::UnavailableError("the worker crashed");
  auto script = [&crashed](const Task& task) {
    for (const std::string& doc : task.map().docs()) {
      if (doc == Doc(90)) return FakeAnswer{crashed};
    }
    return FakeAnswer{pool::NotRunInBatch(crashed)};
  };
  for (bool encoded : {true, false}) {
    FakeTaskRunner runner(2, script);
    FunctionCalls calls(runner, {.min_docs_per_task = 4});
    absl::Status status;
    if (encoded) {
      std::vector<std::string> chunks;
      status = Await(
          calls.MapEncoded(MapRequestOf(100).SerializeAsString(), absl::InfiniteFuture(), chunks));
    } else {
      v1::MapRequest request = MapRequestOf(100);
      v1::MapResponse response;
      status = Await(MapTyped(calls, request, absl::InfiniteFuture(), response));
    }
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
    EXPECT_FALSE(pool::WasNotRunInBatch(status));
    int first = 0, last = 0;
    ASSERT_EQ(std::sscanf(std::string(status.message()).c_str(), "documents %d-%d", &first, &last),
              2)
        << status;
    EXPECT_LE(first, 91) << status;
    EXPECT_GE(last, 91) << status;
  }

  // No part at fault (the pool had no worker for the rest): the call's status, naming no part.
  FakeTaskRunner runner(2, [](const Task& task) {
    if (task.map().docs(0) == Doc(0)) return EchoMap(task);
    return FakeAnswer{pool::NotRunInBatch(absl::UnavailableError("no worker is running"))};
  });
  FunctionCalls calls(runner, {.min_docs_per_task = 4});
  std::vector<std::string> chunks;
  const absl::Status status = Await(
      calls.MapEncoded(MapRequestOf(100).SerializeAsString(), absl::InfiniteFuture(), chunks));
  EXPECT_EQ(status, absl::UnavailableError("no worker is running"));
  EXPECT_THAT(chunks, IsEmpty());
}

TEST_F(FunctionCallsTest, AReplyOfTheWrongKindIsAnInternalError) {
  FakeTaskRunner runner(2, [](const Task&) {
    Reply reply;
    reply.mutable_validate();
    return FakeAnswer{reply};
  });
  FunctionCalls calls(runner, {});
  v1::ReduceRequest request;
  request.add_functions("views.total");
  v1::ReduceResponse response;
  const absl::Status status = Await(calls.Reduce(request, absl::InfiniteFuture(), response));
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(status.message(), HasSubstr("reply kind"));
}

// --- the response size cap -------------------------------------------------------------------

TEST_F(FunctionCallsTest, MapEncodedRefusesAResponseLargerThanACallMayCarry) {
  // Every document maps to 1 KiB of rows: 200 documents answer with over 200 KiB.
  FakeTaskRunner runner(2, [](const Task& task) {
    Reply reply;
    for (int i = 0; i < task.map().docs_size(); ++i) {
      reply.mutable_map()->add_results()->set_rows(std::string(1024, 'r'));
    }
    return FakeAnswer{reply};
  });
  const CallOptions options{.min_docs_per_task = 4, .max_docs_per_task = 10,
                            .max_call_bytes = 100 << 10};
  FunctionCalls calls(runner, options);
  std::vector<std::string> chunks;
  absl::Status status = Await(
      calls.MapEncoded(MapRequestOf(200).SerializeAsString(), absl::InfiniteFuture(), chunks));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(),
            "the response to this call would be larger than the 102400 bytes a call may carry; "
            "split the batch, or raise cnp-server's --max-call-bytes");
  EXPECT_EQ(CallLimitOf(status), (CallLimit{CallLimit::Kind::kAnswer, 100 << 10}));
  EXPECT_THAT(chunks, IsEmpty());
  // It stopped at the wave that crossed the cap.
  EXPECT_LT(runner.started().size(), 20u);

  // 90 documents fit.
  status = Await(
      calls.MapEncoded(MapRequestOf(90).SerializeAsString(), absl::InfiniteFuture(), chunks));
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(Parsed(chunks).results_size(), 90);
}

// A worker as the real one answers: the rows of document 7 are 50 KiB, the others' their own
// bytes, and a task whose answer would pass its max_answer_bytes gets ANSWER_TOO_LARGE.
FakeAnswer UnevenMap(const Task& task) {
  Reply reply;
  for (const std::string& doc : task.map().docs()) {
    reply.mutable_map()->add_results()->set_rows(doc == Doc(7) ? std::string(50 << 10, 's') : doc);
  }
  if (static_cast<int64_t>(reply.map().ByteSizeLong()) > task.max_answer_bytes()) {
    return {FailureReply(worker::v1::Failure::ANSWER_TOO_LARGE, "over the task's bytes")};
  }
  return {reply};
}

// Security review: every part of a wave could answer all that was left of the call's bytes,
// and the replies are held until the wave ends, so one call held up to 4 x workers times
// --max-call-bytes (714 MiB measured for a 64 MiB limit on 2 workers). The parts run at once
// now share what is left; a part over its share, the call not over its limit, runs again alone
// with all that is left, so an uneven call still succeeds.
TEST_F(FunctionCallsTest, ThePartsRunAtOnceShareTheCallsBytes) {
  const CallOptions options{.min_docs_per_task = 4, .max_docs_per_task = 10,
                            .max_call_bytes = 100 << 10};
  auto expect_shared = [](const FakeTaskRunner& runner) {
    size_t next = 0;
    for (size_t batch : runner.batches()) {
      int64_t sum = 0;
      for (size_t t = next; t < next + batch; ++t) sum += runner.started()[t].max_answer_bytes();
      EXPECT_LE(sum, 100 << 10) << "a batch of " << batch;
      next += batch;
    }
  };
  {
    FakeTaskRunner runner(2, UnevenMap);
    FunctionCalls calls(runner, options);
    std::vector<std::string> chunks;
    ASSERT_TRUE(Await(calls.MapEncoded(MapRequestOf(200).SerializeAsString(),
                                       absl::InfiniteFuture(), chunks))
                    .ok());
    const v1::MapResponse response = Parsed(chunks);
    ASSERT_EQ(response.results_size(), 200);
    EXPECT_EQ(response.results(7).rows().size(), size_t{50 << 10});
    EXPECT_EQ(response.results(8).rows(), Doc(8));
    expect_shared(runner);
    // 20 parts of 10, and document 7's once more, alone.
    EXPECT_EQ(runner.started().size(), 21u);
    EXPECT_EQ(std::count(runner.batches().begin(), runner.batches().end(), 1u), 1);
  }
  {
    FakeTaskRunner runner(2, UnevenMap);
    FunctionCalls calls(runner, options);
    v1::MapRequest request = MapRequestOf(40);
    v1::MapResponse response;
    ASSERT_TRUE(Await(MapTyped(calls, request, absl::InfiniteFuture(), response)).ok());
    ASSERT_EQ(response.results_size(), 40);
    EXPECT_EQ(response.results(7).rows().size(), size_t{50 << 10});
    EXPECT_EQ(response.results(39).rows(), Doc(39));
    expect_shared(runner);
    EXPECT_EQ(runner.started().size(), 9u);  // 8 parts, and document 7's again
  }
}

// The same cap and message, whether the batch was one task or split.
TEST_F(FunctionCallsTest, MapRefusesAResponseLargerThanACallMayCarry) {
  FakeTaskRunner runner(2, [](const Task& task) {
    Reply reply;
    for (int i = 0; i < task.map().docs_size(); ++i) {
      reply.mutable_map()->add_results()->set_rows(std::string(1024, 'r'));
    }
    return FakeAnswer{reply};
  });
  const CallOptions options{.min_docs_per_task = 4, .max_call_bytes = 100 << 10};
  FunctionCalls calls(runner, options);
  for (int docs : {3, 200}) {
    // 3 documents are one task; 200 are split. Only 200 answer with more than 100 KiB.
    v1::MapRequest request = MapRequestOf(docs);
    v1::MapResponse response;
    const absl::Status status = Await(MapTyped(calls, request, absl::InfiniteFuture(), response));
    if (docs == 3) {
      EXPECT_TRUE(status.ok()) << status;
      EXPECT_EQ(response.results_size(), 3);
      continue;
    }
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(status.message(),
              "the response to this call would be larger than the 102400 bytes a call may "
              "carry; split the batch, or raise cnp-server's --max-call-bytes");
    EXPECT_EQ(CallLimitOf(status), (CallLimit{CallLimit::Kind::kAnswer, 100 << 10}));
    EXPECT_EQ(response.results_size(), 0);
  }
  // One task alone over the cap is refused too.
  const CallOptions one_task{.min_docs_per_task = 1000, .max_call_bytes = 100 << 10};
  FunctionCalls single(runner, one_task);
  v1::MapRequest request = MapRequestOf(200);
  v1::MapResponse response;
  EXPECT_EQ(Await(MapTyped(single, request, absl::InfiniteFuture(), response)).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(response.results_size(), 0);
}

// A refusal for the answer's size is marked with the call's limit, whether the worker stopped
// the answer itself (ANSWER_TOO_LARGE, on a one-task call) or the pool refused its reply unread
// (marked with the part's share of the limit); the pool's other RESOURCE_EXHAUSTED is not marked.
TEST_F(FunctionCallsTest, AnAnswerRefusedForItsSizeIsMarkedWithTheCallsLimit) {
  const CallOptions options{.max_call_bytes = 100 << 10};
  const CallLimit call_limit{CallLimit::Kind::kAnswer, 100 << 10};
  FakeTaskRunner too_large(1, [](const Task&) {
    return FakeAnswer{FailureReply(worker::v1::Failure::ANSWER_TOO_LARGE, "over 1234 bytes")};
  });
  FunctionCalls stopped(too_large, options);
  v1::ReduceRequest reduce;
  reduce.add_functions("m.total");
  v1::ReduceResponse reduced;
  const absl::Status reduce_status = Await(stopped.Reduce(reduce, absl::InfiniteFuture(), reduced));
  EXPECT_EQ(CallLimitOf(reduce_status), call_limit);
  EXPECT_THAT(reduce_status.message(), HasSubstr("split the batch"));
  // One function's one answer cannot be split: the advice says what can be done.
  v1::ValidateRequest validate;
  validate.set_function("m.check");
  validate.set_new_doc("{}");
  v1::ValidateResponse validated;
  const absl::Status validate_status =
      Await(stopped.Validate(validate, absl::InfiniteFuture(), validated));
  EXPECT_EQ(CallLimitOf(validate_status), call_limit);
  EXPECT_EQ(validate_status.message(),
            "the response to this call would be larger than the 102400 bytes a call may carry; "
            "make the function answer less, or raise cnp-server's --max-call-bytes");

  FakeTaskRunner unread(1, [](const Task&) {
    return FakeAnswer{WithCallLimit(absl::ResourceExhaustedError("the part's answer is too large"),
                                    {CallLimit::Kind::kAnswer, 1234})};
  });
  FunctionCalls refused(unread, options);
  v1::MapRequest request = MapRequestOf(3);
  v1::MapResponse response;
  const absl::Status status = Await(MapTyped(refused, request, absl::InfiniteFuture(), response));
  EXPECT_EQ(status.message(), "the part's answer is too large");
  EXPECT_EQ(CallLimitOf(status), call_limit);

  FakeTaskRunner busy(1, [](const Task&) {
    return FakeAnswer{absl::ResourceExhaustedError("all 1 workers are busy")};
  });
  FunctionCalls queued(busy, options);
  request = MapRequestOf(3);
  const absl::Status full = Await(MapTyped(queued, request, absl::InfiniteFuture(), response));
  EXPECT_TRUE(absl::IsResourceExhausted(full)) << full;
  EXPECT_EQ(CallLimitOf(full), std::nullopt);
}

// --- one-task calls --------------------------------------------------------------------------

TEST_F(FunctionCallsTest, OneTaskCallsMoveTheRequestInAndTheAnswerOut) {
  FakeTaskRunner runner(2, [](const Task& task) {
    Reply reply;
    switch (task.kind_case()) {
      case Task::kReduce:
        reply.mutable_reduce()->add_results(task.reduce().kvs());
        break;
      case Task::kValidate:
        reply.mutable_validate();
        break;
      case Task::kDesign:
        reply.mutable_design()->set_reply(task.design().function());
        break;
      case Task::kResolve:
        for (const std::string& f : task.resolve().functions()) {
          reply.mutable_resolve()->add_functions()->set_function(f);
        }
        break;
      default:
        return FakeAnswer{absl::InternalError("unexpected task")};
    }
    return FakeAnswer{reply};
  });
  FunctionCalls calls(runner, {});
  const absl::Time deadline = absl::InfiniteFuture();

  v1::ReduceRequest reduce_request;
  reduce_request.add_functions("views.total");
  reduce_request.set_kvs("[[[1,\"a\"],2]]");
  v1::ReduceResponse reduce;
  ASSERT_TRUE(Await(calls.Reduce(reduce_request, deadline, reduce)).ok());
  EXPECT_THAT(reduce.results(), ElementsAre("[[[1,\"a\"],2]]"));

  v1::ValidateRequest validate_request;
  validate_request.set_function("checks.author");
  validate_request.set_new_doc("{}");
  v1::ValidateResponse validate;
  ASSERT_TRUE(Await(calls.Validate(validate_request, deadline, validate)).ok());

  v1::DesignFunctionRequest design_request;
  design_request.set_function("design.update");
  design_request.set_kind(v1::UPDATE);
  v1::DesignFunctionResponse design;
  ASSERT_TRUE(Await(calls.CallDesignFunction(design_request, deadline, design)).ok());
  EXPECT_EQ(design.reply(), "design.update");

  v1::ResolveRequest resolve_request;
  resolve_request.add_functions("views.by_id");
  v1::ResolveResponse resolve;
  ASSERT_TRUE(Await(calls.Resolve(resolve_request, deadline, resolve)).ok());
  ASSERT_EQ(resolve.functions_size(), 1);
  EXPECT_EQ(resolve.functions(0).function(), "views.by_id");

  EXPECT_THAT(runner.batches(), ElementsAre(1u, 1u, 1u, 1u));
}

// --- function errors -------------------------------------------------------------------------

// The value of cnp_function_errors_total for `function`, as a scrape shows it.
std::string FunctionErrorsLine(const std::string& function) {
  const std::string text = metrics::Registry::Default().Render();
  const std::string prefix = absl::StrCat("cnp_function_errors_total{function=\"", function, "\"} ");
  const size_t at = text.find(prefix);
  if (at == std::string::npos) return "";
  return text.substr(at, text.find('\n', at) - at);
}

TEST_F(FunctionCallsTest, FunctionErrorsAreCounted) {
  // Every other document raises in the map function.
  FakeTaskRunner runner(2, [](const Task& task) {
    Reply reply;
    for (int i = 0; i < task.map().docs_size(); ++i) {
      v1::MapResult& result = *reply.mutable_map()->add_results();
      result.set_rows("[[]]");
      if (i % 2 == 0) {
        v1::FunctionError& error = *result.add_errors();
        error.set_function("tests.raises_on_even");
        error.set_type("KeyError");
      }
    }
    return FakeAnswer{reply};
  });
  FunctionCalls calls(runner, {.min_docs_per_task = 4});
  v1::MapRequest request = MapRequestOf(8);  // two parts of four: two errors each
  v1::MapResponse response;
  ASSERT_TRUE(Await(MapTyped(calls, request, absl::InfiniteFuture(), response)).ok());
  EXPECT_EQ(FunctionErrorsLine("tests.raises_on_even"),
            "cnp_function_errors_total{function=\"tests.raises_on_even\"} 4");
  EXPECT_EQ(response.results(0).errors(0).type(), "KeyError");
}

// A function whose module raised when imported fails the call (NOT_FOUND), and counts: once per
// task the worker answered so, as README says the counter has them all. A module that does not
// exist is no function's error.
TEST_F(FunctionCallsTest, AnImportThatRaisedIsCountedAsTheFunctionsError) {
  FakeTaskRunner runner(2, [](const Task& task) {
    Reply reply;
    worker::v1::Failure& failure = *reply.mutable_failure();
    failure.set_code(worker::v1::Failure::NOT_FOUND);
    failure.set_function(task.map().functions(0));
    failure.set_message("importing tests: ZeroDivisionError: division by zero");
    if (task.map().functions(0) == "tests.import_raises") {
      reply.add_import_raised(task.map().functions(0));
    }
    return FakeAnswer{reply};
  });
  FunctionCalls calls(runner, {.min_docs_per_task = 4});
  for (int i = 0; i < 2; ++i) {
    v1::MapRequest request = MapRequestOf(1);
    request.set_functions(0, "tests.import_raises");
    v1::MapResponse response;
    EXPECT_EQ(Await(MapTyped(calls, request, absl::InfiniteFuture(), response)).code(),
              absl::StatusCode::kNotFound);
  }
  EXPECT_EQ(FunctionErrorsLine("tests.import_raises"),
            "cnp_function_errors_total{function=\"tests.import_raises\"} 2");
  v1::MapRequest missing = MapRequestOf(1);
  missing.set_functions(0, "tests.no_such_module");
  v1::MapResponse response;
  EXPECT_EQ(Await(MapTyped(calls, missing, absl::InfiniteFuture(), response)).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(FunctionErrorsLine("tests.no_such_module"), "");
}

// --- cancellation ----------------------------------------------------------------------------

TEST_F(FunctionCallsTest, CancellingABigMapStartsNoFurtherWave) {
  // Each part takes a minute; the client goes away as soon as the first wave has started.
  FakeTaskRunner runner(2, [](const Task& task) {
    FakeAnswer answer = EchoMap(task);
    answer.delay = absl::Minutes(1);
    return answer;
  });
  runner.set_on_start([this, first = true](const Task&) mutable {
    if (std::exchange(first, false)) CancelLater();
  });
  FunctionCalls calls(runner, {.min_docs_per_task = 4, .max_docs_per_task = 10});
  std::vector<std::string> chunks;
  const absl::Time start = absl::Now();
  const absl::Status status = Await(
      calls.MapEncoded(MapRequestOf(10'000).SerializeAsString(), absl::InfiniteFuture(), chunks));
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  // One wave started and was cancelled in flight; no task was started after the cancel.
  EXPECT_THAT(runner.batches(), ElementsAre(8u));
  EXPECT_EQ(runner.cancelled(), 8);
  EXPECT_THAT(chunks, IsEmpty());
}

TEST_F(FunctionCallsTest, AMapCancelledAsAWaveFinishesStartsNoFurtherWave) {
  // The first wave's parts are answered at once, but the client cancels while they run: the
  // next wave must not start even though nothing was left in flight to cancel.
  FakeTaskRunner runner(2, EchoMap);
  runner.set_on_start([this, first = true](const Task&) mutable {
    if (std::exchange(first, false)) cancel_.emit(asio::cancellation_type::terminal);
  });
  FunctionCalls calls(runner, {.min_docs_per_task = 4, .max_docs_per_task = 10});
  std::vector<std::string> chunks;
  const absl::Status status = Await(
      calls.MapEncoded(MapRequestOf(1'000).SerializeAsString(), absl::InfiniteFuture(), chunks));
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(runner.batches(), ElementsAre(8u));
  EXPECT_THAT(chunks, IsEmpty());
}

TEST_F(FunctionCallsTest, CancellingAMapOrAValidateEndsItAtOnce) {
  FakeTaskRunner runner(2, [](const Task& task) {
    Reply reply;
    if (task.has_map()) return FakeAnswer{EchoMap(task).reply, absl::Minutes(1)};
    reply.mutable_validate();
    return FakeAnswer{reply, absl::Minutes(1)};
  });
  bool armed = true;  // cancels once per call, as its first task starts
  runner.set_on_start([this, &armed](const Task&) {
    if (std::exchange(armed, false)) CancelLater();
  });
  FunctionCalls calls(runner, {.min_docs_per_task = 4});

  v1::MapRequest map_request = MapRequestOf(100);
  v1::MapResponse map;
  EXPECT_EQ(Await(MapTyped(calls, map_request, absl::InfiniteFuture(), map)).code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(map.results_size(), 0);
  EXPECT_EQ(runner.cancelled(), 8);

  armed = true;
  v1::ValidateRequest validate_request;
  validate_request.set_function("checks.author");
  validate_request.set_new_doc("{}");
  v1::ValidateResponse validate;
  EXPECT_EQ(Await(calls.Validate(validate_request, absl::InfiniteFuture(), validate)).code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(runner.cancelled(), 9);
}

// --- deadlines -------------------------------------------------------------------------------

TEST_F(FunctionCallsTest, TheServersCallTimeoutBoundsTheClientsDeadline) {
  FakeTaskRunner runner(2, [](const Task&) {
    Reply reply;
    reply.mutable_validate();
    return FakeAnswer{reply};
  });
  FunctionCalls calls(runner, {.call_timeout = absl::Seconds(5)});
  v1::ValidateRequest request;
  request.set_function("checks.author");
  request.set_new_doc("{}");
  v1::ValidateResponse response;

  // No client deadline: the server's limit applies.
  const absl::Time before = absl::Now();
  ASSERT_TRUE(Await(calls.Validate(request, absl::InfiniteFuture(), response)).ok());
  const absl::Time after = absl::Now();
  ASSERT_EQ(runner.deadlines().size(), 1u);
  EXPECT_GE(runner.deadlines()[0], before + absl::Seconds(5));
  EXPECT_LE(runner.deadlines()[0], after + absl::Seconds(5));

  // An earlier client deadline is kept as it is.
  const absl::Time soon = absl::Now() + absl::Seconds(1);
  request.set_function("checks.author");
  request.set_new_doc("{}");
  ASSERT_TRUE(Await(calls.Validate(request, soon, response)).ok());
  EXPECT_EQ(runner.deadlines()[1], soon);
}

TEST_F(FunctionCallsTest, ADeadlinePassingMidTaskEndsTheCall) {
  // The tasks would take a minute; the client allows 50 ms.
  FakeTaskRunner runner(2, [](const Task& task) {
    if (task.has_map()) return FakeAnswer{EchoMap(task).reply, absl::Minutes(1)};
    Reply reply;
    reply.mutable_validate();
    return FakeAnswer{reply, absl::Minutes(1)};
  });
  FunctionCalls calls(runner, {.min_docs_per_task = 4, .max_docs_per_task = 10});

  v1::ValidateRequest request;
  request.set_function("checks.author");
  request.set_new_doc("{}");
  v1::ValidateResponse response;
  absl::Time start = absl::Now();
  EXPECT_EQ(Await(calls.Validate(request, start + absl::Milliseconds(50), response)).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));

  // A Map's first wave runs out of time: no later wave starts, and nothing is answered.
  std::vector<std::string> chunks;
  start = absl::Now();
  EXPECT_EQ(Await(calls.MapEncoded(MapRequestOf(1'000).SerializeAsString(),
                                   start + absl::Milliseconds(50), chunks))
                .code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_THAT(runner.batches(), ElementsAre(1u, 8u));
  EXPECT_THAT(chunks, IsEmpty());
}

}  // namespace
}  // namespace cnp::calls
