// One small call must not make cnp-server hold many times --max-call-bytes (security review:
// a Map naming svc_fns.echo 500 times on one 1 MB document raised the server's RSS from 26 to
// 980 MiB before it answered RESOURCE_EXHAUSTED, and the Session stream did the same with 500
// add_fun and one map_doc, which a CouchDB admin can send with a 500-view design document).
// Now the worker stops building the answer at the limit the task carries, and the server reads
// no reply over it: the peak stays near where it was, the answer names the limit and the flag,
// and the worker is kept.
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/process_memory.h"
#include "tests/support/server_process.h"
#include "tests/support/session_stream.h"

namespace cnp {
namespace {

using ::cnp::testing::ServerProcess;
using ::cnp::testing::SessionStream;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int64_t kMaxCallBytes = 4 << 20;
// 300 names on a 1 MB document: a 300 MB answer, unbounded.
constexpr int kNames = 300;
// What the server may grow by for such a call: the request (1 MB, held by gRPC and the task),
// and room for a loaded machine's allocator; far below the answer's size.
constexpr int64_t kAllowedGrowth = 48 << 20;

std::unique_ptr<ServerProcess> StartServer() {
  return ServerProcess::StartWithFunctions({"tests/functions/server"}, 2,
                                           {absl::StrCat("--max-call-bytes=", kMaxCallBytes)});
}

std::string MegabyteDoc() {
  return absl::StrCat(R"({"_id":"big","blob":")", std::string(1 << 20, 'x'), R"("})");
}

TEST(AnswerMemoryTest, AMapOfManyNamesOnOneDocumentIsRefusedWithoutHoldingItsAnswer) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  {
    auto warm = client->Map({"svc_fns.echo"}, {MegabyteDoc()});
    ASSERT_TRUE(warm.ok()) << warm.status();
  }
  const int64_t before = ::cnp::testing::ProcStatusBytes(server->pid(), "VmRSS");
  auto refused = client->Map(std::vector<std::string>(kNames, "svc_fns.echo"), {MegabyteDoc()},
                             absl::Minutes(2));
  const int64_t peak = ::cnp::testing::ProcStatusBytes(server->pid(), "VmHWM");
  std::cerr << "server RSS before " << (before >> 20) << " MiB, peak " << (peak >> 20)
            << " MiB\n";
  EXPECT_TRUE(absl::IsResourceExhausted(refused.status())) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr(absl::StrCat(kMaxCallBytes)));
  EXPECT_THAT(refused.status().message(), HasSubstr("--max-call-bytes"));
  EXPECT_LT(peak - before, kAllowedGrowth) << "before " << before << ", peak " << peak;
  // The worker refused to build the answer itself: it was not killed, and serves on.
  auto next = client->Map({"svc_fns.echo"}, {R"({"_id":"s"})"});
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->results(0).rows(), R"([[["s",{"_id":"s"}]]])");
  EXPECT_THAT(server->Log(), ::testing::Not(HasSubstr("killing and replacing")));
}


TEST(AnswerMemoryTest, AMapDocAfterManyAddFunsIsAnErrorLineWithoutHoldingItsAnswer) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  SessionStream session(*server);
  // As CouchDB does on every checkout; a timeout long enough that the answer, unbounded, would
  // be built and read rather than cut short (the server's --call-timeout, 60 s, still applies).
  ASSERT_TRUE(session.Send(R"(["reset",{"timeout":120000}])"));  // answered by nothing
  for (int i = 0; i < kNames; ++i) {
    auto added = session.Ask(R"(["add_fun","svc_fns.echo"])");
    ASSERT_TRUE(added.has_value());
    ASSERT_EQ(*added, std::vector<std::string>{"true"});
  }
  // Warm: the module imported, small answers of every function.
  auto small = session.Ask(R"(["map_doc",{"_id":"s"}])");
  ASSERT_TRUE(small.has_value());
  ASSERT_EQ(small->size(), 1u);
  EXPECT_THAT(small->front(), StartsWith(R"([[["s",{"_id":"s"}]],[["s",)"));

  const int64_t before = ::cnp::testing::ProcStatusBytes(server->pid(), "VmRSS");
  auto answer = session.Ask(absl::StrCat(R"(["map_doc",)", MegabyteDoc(), "]"));
  const int64_t peak = ::cnp::testing::ProcStatusBytes(server->pid(), "VmHWM");
  std::cerr << "server RSS before " << (before >> 20) << " MiB, peak " << (peak >> 20)
            << " MiB\n";
  ASSERT_TRUE(answer.has_value());
  ASSERT_EQ(answer->size(), 1u);
  // An error line, never an empty result: CouchDB fails the index update and retries later.
  EXPECT_THAT(answer->front(), StartsWith(R"(["error","too_large",)"));
  EXPECT_THAT(answer->front(), HasSubstr(absl::StrCat(kMaxCallBytes)));
  EXPECT_THAT(answer->front(), HasSubstr("--max-call-bytes"));
  EXPECT_LT(peak - before, kAllowedGrowth) << "before " << before << ", peak " << peak;
  // The session goes on.
  auto again = session.Ask(R"(["map_doc",{"_id":"t"}])");
  ASSERT_TRUE(again.has_value());
  ASSERT_EQ(again->size(), 1u);
  EXPECT_THAT(again->front(), StartsWith(R"([[["t",{"_id":"t"}]],)"));
}

}  // namespace
}  // namespace cnp
