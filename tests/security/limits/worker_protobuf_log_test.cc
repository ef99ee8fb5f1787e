// What a peer's bytes make a worker write to the log is bounded as the server's own protobuf
// lines are (a security review): a function name that is not UTF-8 on a Session stream
// (["add_fun","m.\xff"]) makes the server build a task protobuf then refuses to parse in the
// worker, and the worker's protobuf wrote one line to stderr, into the server's log, for every
// such line a peer sent (200 lines, 200 log lines), past the --log-format and the rate limit
// the server applies to its own (service/common/protobuf_log.h). The worker now routes them the
// same way: at most one line per place in protobuf's code per 10 s, in the log's format.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/server_process.h"

namespace cnp {
namespace {

using ::cnp::testing::ServerProcess;
using ::testing::StartsWith;

constexpr int kLines = 200;

int CountLinesWith(const std::string& log, absl::string_view text) {
  int count = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, text)) ++count;
  }
  return count;
}

TEST(WorkerProtobufLogTest, NamesThatAreNotUtf8DoNotFloodTheLog) {
  auto server = ServerProcess::Start(
      {"--python-path=" + testing::Runfile("tests/functions/server"), "--workers=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = (*server)->Connect();
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(1)));
  auto stream = client->stub().Session(&context);
  for (int i = 0; i < kLines; ++i) {
    v1::SessionInput input;
    input.set_line("[\"add_fun\",\"svc_fns.\xff\"]");
    ASSERT_TRUE(stream->Write(input));
    v1::SessionOutput output;
    ASSERT_TRUE(stream->Read(&output));
    ASSERT_EQ(output.lines_size(), 1);
    EXPECT_THAT(output.lines(0), StartsWith(R"(["error",)")) << i;
  }
  // The session goes on.
  v1::SessionInput input;
  input.set_line(R"(["add_fun","svc_fns.echo"])");
  ASSERT_TRUE(stream->Write(input));
  v1::SessionOutput output;
  ASSERT_TRUE(stream->Read(&output));
  EXPECT_EQ(output.lines(0), "true");
  stream->WritesDone();
  context.TryCancel();

  const std::string log = (*server)->Log();
  const int lines = CountLinesWith(log, "invalid UTF-8");
  std::cerr << lines << " log lines about invalid UTF-8 for " << kLines << " names\n";
  // The server's own line and the worker's, each once in 10 s (and its count, if one came).
  EXPECT_LE(lines, 4) << log.substr(0, 2000);
  EXPECT_EQ(CountLinesWith(log, "[libprotobuf"), 0) << "protobuf's own format, past the log's";
}

}  // namespace
}  // namespace cnp
