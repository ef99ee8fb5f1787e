// What the client library (client/lib/cnp_client.h) tells a service that calls cnp-server,
// through a real server: a request that crashed a worker is marked not to be sent again
// (IsNotRetryable, from the server's "grpc-retry-pushback-ms: -1"), which a replica that went
// away is not, also for a caller that retries by itself (RetryPolicy::kNone); one const Client
// serves several threads at once; a call made on stub() has the client's default deadline; and
// a program outside the repository's packages can build against it.
#include <csignal>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/lib/cnp_client.h"
#include "common/retry_advice.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/docs.h"
#include "tests/support/server_process.h"
#include "tests/support/spawn.h"
#include "tests/support/start_signal.h"

namespace cnp {
namespace {

using ::cnp::client::Client;
using ::cnp::client::ClientOptions;
using ::cnp::client::RetryPolicy;
using ::cnp::testing::ServerProcess;
using ::cnp::testing::StartSignal;

std::unique_ptr<Client> ConnectTo(const ServerProcess& server, ClientOptions options) {
  options.connect_timeout = absl::Seconds(10);
  auto client = Client::Connect(server.target(), client::ChannelSecurity{}, options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

TEST(ClientLibraryTest, ARequestThatCrashedAWorkerIsMarkedNotToBeRetried) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server", "tests/rpc/pyfns"}, 1);
  ASSERT_NE(server, nullptr);
  for (RetryPolicy retry : {RetryPolicy::kNone, RetryPolicy::kIdempotentCalls}) {
    auto client = ConnectTo(*server, {.retry = retry});
    ASSERT_NE(client, nullptr);
    auto crashed = client->Map({"svc_fns.exits"}, {R"({"_id":"a"})"});
    ASSERT_TRUE(absl::IsUnavailable(crashed.status())) << crashed.status();
    EXPECT_TRUE(IsNotRetryable(crashed.status())) << crashed.status();
    EXPECT_FALSE(client::IsServerUnreachable(crashed.status())) << crashed.status();
  }
  // The pool replaced the worker: the next call is answered, and not marked.
  auto client = ConnectTo(*server, {.retry = RetryPolicy::kNone});
  ASSERT_NE(client, nullptr);
  auto answered = client->Map({"svc_fns.doubled"}, {R"({"_id":"a","n":2})"});
  ASSERT_TRUE(answered.ok()) << answered.status();
}

TEST(ClientLibraryTest, AServerThatWentAwayMidCallIsNotMarkedNotToBeRetried) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server", "tests/rpc/pyfns"}, 1);
  ASSERT_NE(server, nullptr);
  auto client = ConnectTo(*server, {.retry = RetryPolicy::kNone});
  ASSERT_NE(client, nullptr);
  StartSignal started;
  v1::ValidateRequest held;
  held.set_function("rpc_fns.slow_validate");
  held.set_new_doc(absl::StrCat(R"({"_id":"x","signal":")", started.path(), R"("})"));
  absl::Status status;
  std::thread caller([&] { status = client->Validate(held).status(); });
  ASSERT_TRUE(started.Wait(absl::Seconds(60))) << server->Log();
  server->Signal(SIGKILL);
  caller.join();
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_FALSE(IsNotRetryable(status)) << status;
}

// Several threads share one Client through a const reference, as a service would.
TEST(ClientLibraryTest, OneConstClientServesSeveralThreads) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server", "tests/rpc/pyfns"}, 2);
  ASSERT_NE(server, nullptr);
  std::unique_ptr<Client> owned = ConnectTo(*server, {});
  ASSERT_NE(owned, nullptr);
  const Client& shared = *owned;
  constexpr int kThreads = 8, kCalls = 10;
  std::vector<int> answered(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        const std::string id = absl::StrCat("t", t, "-", i);
        auto mapped = shared.Map({"svc_fns.doubled"}, {testing::Doc(id, i)});
        if (mapped.ok() && mapped->results(0).rows() ==
                               absl::StrCat(R"([[[")", id, R"(",)", 2 * i, "]]]")) {
          ++answered[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(answered[t], kCalls) << "thread " << t;
  auto resolved = shared.Resolve({"svc_fns.by_town"});
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->functions(0).version(), 7);
}

TEST(ClientLibraryTest, ACallOnTheStubHasTheClientsDefaultDeadline) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server", "tests/rpc/pyfns"}, 1);
  ASSERT_NE(server, nullptr);
  auto client = ConnectTo(*server, {.call_timeout = absl::Seconds(3)});
  ASSERT_NE(client, nullptr);
  grpc::ClientContext context;
  const absl::Time before = absl::Now();
  client->PrepareContext(context);
  const absl::Time deadline = absl::FromChrono(context.deadline());
  EXPECT_GE(deadline, before + absl::Seconds(3));
  EXPECT_LE(deadline, absl::Now() + absl::Seconds(3));
  // And it holds: a call that would run for minutes ends at it.
  StartSignal started;
  v1::ValidateRequest held;
  held.set_function("rpc_fns.slow_validate");
  held.set_new_doc(absl::StrCat(R"({"_id":"x","signal":")", started.path(), R"("})"));
  v1::ValidateResponse response;
  grpc::Status status = client->stub().Validate(&context, held, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  // The function had started: the deadline ended a call running in its worker, not one that
  // never got there. (It writes its byte as it starts, before sleeping for minutes.)
  EXPECT_TRUE(started.Wait(absl::Seconds(20))) << "the function never ran";
  // None when asked for none.
  grpc::ClientContext unbounded;
  client->PrepareContext(unbounded, absl::InfiniteDuration());
  EXPECT_EQ(unbounded.deadline(), std::chrono::system_clock::time_point::max());
}

// A program outside the repository's own packages (examples/client_library) builds against
// the library's public targets and gets the same marks.
TEST(ClientLibraryTest, AProgramOutsideTheRepositorysPackagesUsesTheLibrary) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server", "tests/rpc/pyfns"}, 1);
  ASSERT_NE(server, nullptr);
  const std::string program = testing::Runfile("examples/client_library/map_documents");
  testing::ProcessResult mapped = testing::RunWithInput(
      {program, server->target(), "svc_fns.doubled", R"({"_id":"a","n":21})"}, "");
  EXPECT_EQ(mapped.exit_code, 0) << mapped.err;
  EXPECT_EQ(mapped.out, "[[[\"a\",42]]]\n");
  testing::ProcessResult crashed =
      testing::RunWithInput({program, server->target(), "svc_fns.exits", R"({"_id":"a"})"}, "");
  EXPECT_EQ(crashed.exit_code, 1);
  EXPECT_THAT(crashed.out, ::testing::StartsWith("UNAVAILABLE not-retryable\n"));
}

}  // namespace
}  // namespace cnp
