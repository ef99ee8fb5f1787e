// Refused calls of a server's last seconds reach the access log when it stops. A peer's first
// refusal is written at once and the rest of the interval's are counted; before, those counts
// were written only by the acceptor's periodic flush, which never ran at stop, so that a SIGTERM
// 2 s after five refused calls left one line saying calls=1.
#include <signal.h>
#include <sys/wait.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/lib/cnp_client.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"
#include "tests/support/server_process.h"

namespace cnp {
namespace {

using ::cnp::testing::ReadFile;
using ::cnp::testing::Runfile;
using ::cnp::testing::ServerProcess;
using ::cnp::testing::ShortTempDir;
using ::cnp::testing::WriteFile;

// The calls the access log's refusal lines for Map stand for, summed ("calls=N" on each).
int RefusedMapCallsLogged(const std::string& log) {
  int total = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    if (!absl::StrContains(line, "call=Map")) continue;
    const size_t at = line.find("calls=");
    if (at == absl::string_view::npos) continue;
    absl::string_view count = line.substr(at + 6);
    count = count.substr(0, count.find(' '));
    int n = 0;
    if (absl::SimpleAtoi(count, &n)) total += n;
  }
  return total;
}

constexpr int kCalls = 5;

TEST(RefusalsAtStopTest, EveryRefusedCallIsInTheAccessLogOnceTheServerHasStopped) {
  const std::string dir = ShortTempDir();
  const std::string log = dir + "/access.log";
  WriteFile(dir + "/token", "t0ken-for-the-stop-test\n", 0600);
  auto server = ServerProcess::Launch(
      {.args = {"--workers=1", "--python-path=" + Runfile("tests/functions/server"),
                "--listen=127.0.0.1:0", "--auth-token-file=" + dir + "/token",
                "--access-log=" + log}});
  ASSERT_TRUE(server->ready()) << server->Log();
  {
    // No token: each call is refused. All within one refusal interval (10 s), so only the
    // first has a line of its own.
    auto client = client::Client::Connect(absl::StrCat("127.0.0.1:", server->Port()));
    ASSERT_TRUE(client.ok()) << client.status();
    for (int i = 0; i < kCalls; ++i) {
      EXPECT_FALSE((*client)->Map({"svc_fns.doubled"}, {R"({"_id":"a","n":1})"}).ok());
    }
  }
  server->Signal(SIGTERM);
  const int status = server->WaitForExit();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << server->Log();
  EXPECT_EQ(RefusedMapCallsLogged(ReadFile(log)), kCalls) << ReadFile(log);
}

}  // namespace
}  // namespace cnp
