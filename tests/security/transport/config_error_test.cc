// --config errors: every one names the file, the line and column, the key, what was found and
// what was expected, and the server exits 2 (a map where a list is expected once aborted it,
// exit 134; a map where a number is expected said "bad value for 'workers': " and nothing more).
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/security/transport/transport_testing.h"
#include "tests/support/server_process.h"

namespace cnp::security_testing {
namespace {

using ::testing::HasSubstr;

struct Case {
  std::string yaml;
  std::string message;  // after "<file>:": "LINE:COLUMN: key: ..."
};

class ConfigErrorTest : public ::testing::TestWithParam<Case> {};

TEST_P(ConfigErrorTest, NamesFileLineKeyFoundAndExpectedAndExitsTwo) {
  const std::string dir = ShortTempDir();
  const std::string file = dir + "/cnp.yml";
  WriteFile(file, GetParam().yaml, 0644);
  auto server = LaunchServer(
      {.args = {"--listen=unix:" + dir + "/s/cnp.sock", "--config=" + file}});
  ASSERT_FALSE(server->ready());
  EXPECT_EQ(server->ExitCode(), 2) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr(absl::StrCat(file, ":", GetParam().message)));
}

INSTANTIATE_TEST_SUITE_P(
    Yaml, ConfigErrorTest,
    ::testing::Values(
        Case{"listen: {x: 1}\n",
             "1:9: listen: expected a list of strings (or one string), found a map"},
        Case{"workers: 1\ngrpc-threads:\n  a: 1\n",
             "3:3: grpc-threads: expected a whole number, found a map; write e.g. "
             "'grpc-threads: 0' (the default)"},
        Case{"workers: lots\n", "1:10: workers: expected a whole number, found 'lots'"},
        Case{"call-timeout: [1, 2]\n",
             "1:15: call-timeout: expected a duration such as 30s or 2m, found a list"},
        Case{"insecure: maybe\n", "1:11: insecure: expected true or false, found 'maybe'"},
        Case{"python-path:\n  - /srv\n  - {a: 1}\n",
             "3:5: python-path: expected a list of strings, found a map in the list"},
        Case{"workers: 1\nwokers: 2\n", "2:1: wokers: unknown setting; did you mean 'workers'?"},
        Case{"- workers\n", "1:1: expected a map of setting names to values, found a list"},
        Case{"? [a]\n: 1\n", "1:3: expected a setting name, found a list"},
        Case{"workers: [1\n", "2:1: "}));

// A request the server accepts must fit into the one frame that takes it to a worker: a limit
// above that once let a call through that the worker's frame then refused.
TEST(ConfigFlagTest, AMaxCallBytesOverTheWorkersFrameIsRefused) {
  const std::string dir = ShortTempDir();
  auto server = LaunchServer({.args = {"--listen=unix:" + dir + "/s/cnp.sock",
                                       "--max-call-bytes=2000000000"}});
  ASSERT_FALSE(server->ready());
  EXPECT_NE(server->ExitCode(), 0) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("--max-call-bytes must be between 1 and"));
  EXPECT_THAT(server->Log(), HasSubstr("a worker's frame holds at most 1073741824 bytes"));
}

// gRPC holds a call's request and its answer at once: a memory bound below two of the largest
// would refuse calls the byte limit allows.
TEST(ConfigFlagTest, AMaxGrpcMemoryBelowTwoLargestCallsIsRefused) {
  const std::string dir = ShortTempDir();
  auto server = LaunchServer({.args = {"--listen=unix:" + dir + "/s/cnp.sock",
                                       "--max-call-bytes=16777216",
                                       "--max-grpc-memory=16777216"}});
  ASSERT_FALSE(server->ready());
  EXPECT_NE(server->ExitCode(), 0) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("--max-grpc-memory must be at least twice "
                                       "--max-call-bytes (33554432)"));
  EXPECT_THAT(server->Log(), HasSubstr("got 16777216"));
}

TEST(ConfigFileTest, AMissingFileIsAnErrorThatNamesIt) {
  const std::string dir = ShortTempDir();
  auto server = LaunchServer(
      {.args = {"--listen=unix:" + dir + "/s/cnp.sock", "--config=" + dir + "/none.yml"}});
  ASSERT_FALSE(server->ready());
  EXPECT_EQ(server->ExitCode(), 2);
  EXPECT_THAT(server->Log(), HasSubstr("cannot read config file " + dir + "/none.yml"));
}

TEST(ConfigFileTest, SecuritySettingsComeFromTheFileToo) {
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/cnp.yml", "listen: 0.0.0.0:0\n", 0644);
  auto refused = LaunchServer({.args = {"--config=" + dir + "/cnp.yml"}});
  ASSERT_FALSE(refused->ready());
  // A configuration error like any other, at the file's line, before any worker starts.
  EXPECT_EQ(refused->ExitCode(), 2) << refused->Log();
  EXPECT_THAT(refused->Log(),
              HasSubstr(dir + "/cnp.yml:1:9: listen: refusing to listen on 0.0.0.0:0 in "
                                  "plaintext"));
  EXPECT_THAT(refused->Log(), HasSubstr("or set insecure: true"));
  EXPECT_THAT(refused->Log(), ::testing::Not(HasSubstr("starting 1 workers")));

  // Allowed with insecure: true, it listens on 0.0.0.0 in plaintext: in a network namespace of
  // its own, so that nothing off the host could reach it.
  WriteFile(dir + "/insecure.yml",
            "listen:\n  - 0.0.0.0:0\n  - unix:" + dir + "/s/cnp.sock\ninsecure: true\n", 0644);
  std::string why;
  auto allowed = LaunchServerWithoutNetwork({.args = {"--config=" + dir + "/insecure.yml"}}, why);
  if (allowed == nullptr) GTEST_SKIP() << "the allowed case: " << why;
  EXPECT_TRUE(allowed->ready()) << allowed->Log();
  EXPECT_THAT(allowed->Log(), HasSubstr("listening on 0.0.0.0:0 (port"));
}

// A Prometheus on another host needs the metrics off loopback: --metrics-public allows that
// and only that. Before, it took --insecure, which also let the gRPC listeners serve anyone in
// plaintext.
TEST(ConfigFileTest, MetricsPublicAllowsTheMetricsOffLoopbackAndNothingElse) {
  const std::string dir = ShortTempDir();
  auto grpc_too = LaunchServer({.args = {"--listen=0.0.0.0:0", "--metrics-public"}});
  ASSERT_FALSE(grpc_too->ready());
  EXPECT_EQ(grpc_too->ExitCode(), 2) << grpc_too->Log();
  EXPECT_THAT(grpc_too->Log(), HasSubstr("refusing to listen on 0.0.0.0:0 in plaintext"));

  auto without = LaunchServer({.args = {"--listen=unix:" + dir + "/a.sock",
                                        "--metrics-listen=0.0.0.0:0"}});
  ASSERT_FALSE(without->ready());
  EXPECT_EQ(without->ExitCode(), 2) << without->Log();
  EXPECT_THAT(without->Log(), HasSubstr("or pass --metrics-public if every host"));

  // What it takes is host:port, whatever was given (a word was told "use unix:/path or
  // host:port", and the unix path then refused).
  for (const char* given : {"nonsense", "unix:/tmp/m.sock"}) {
    auto wrong = LaunchServer({.args = {"--listen=unix:" + dir + "/a.sock",
                                        absl::StrCat("--metrics-listen=", given)}});
    ASSERT_FALSE(wrong->ready());
    EXPECT_EQ(wrong->ExitCode(), 2) << wrong->Log();
    EXPECT_THAT(wrong->Log(), HasSubstr(absl::StrCat("--metrics-listen=", given,
                                                     ": give host:port (e.g. 127.0.0.1:9464)")));
  }

  // Allowed, in a network namespace of its own, so that nothing off the host could reach it.
  WriteFile(dir + "/public.yml",
            "listen: unix:" + dir + "/b.sock\nmetrics-listen: 0.0.0.0:0\nmetrics-public: true\n",
            0644);
  std::string why;
  auto allowed = LaunchServerWithoutNetwork({.args = {"--config=" + dir + "/public.yml"}}, why);
  if (allowed == nullptr) GTEST_SKIP() << "the allowed case: " << why;
  EXPECT_TRUE(allowed->ready()) << allowed->Log();
  EXPECT_THAT(allowed->Log(), HasSubstr("/metrics (port"));
}

}  // namespace
}  // namespace cnp::security_testing

namespace cnp::security_testing {
namespace {

// --help tells the truth: every setting is listed (absl shows only the flags of the program's
// main file unless told where ours live), spelt as it is used, with dashes (absl lists the names
// flags were defined with, --python_path), on stdout. It exits 0 without starting anything.
TEST(ConfigFileTest, HelpListsEverySettingWithDashes) {
  ProcessResult help = RunWithInput({::cnp::testing::Runfile("service/cnp-server"), "--help"}, "");
  EXPECT_EQ(help.exit_code, 0) << help.err;
  const std::string& text = help.out;
  EXPECT_THAT(text, ::testing::Not(HasSubstr("No flags matched")));
  for (const char* flag : {"--python-path=", "--allow-module=", "--listen=", "--workers=",
                           "--tls-cert=", "--auth-token-file=", "--max-sessions=", "--config=",
                           "--shutdown-grace=DURATION", "--log-format=", "--insecure\n"}) {
    EXPECT_THAT(text, HasSubstr(flag)) << text;
  }
  // No flag is listed with an underscore (the one mention says the other spelling works too).
  int listed = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, "  --")) continue;
    ++listed;
    absl::string_view name = line.substr(4, line.find_first_of("= ", 4) - 4);
    EXPECT_THAT(std::string(name), ::testing::Not(HasSubstr("_"))) << line;
  }
  EXPECT_GE(listed, 30);
  // Both spellings are accepted: --help's own advice holds.
  for (const char* spelling : {"--log-format=bogus", "--log_format=bogus"}) {
    ProcessResult run =
        RunWithInput({::cnp::testing::Runfile("service/cnp-server"), spelling}, "");
    EXPECT_NE(run.exit_code, 0);
    EXPECT_THAT(run.err, HasSubstr("--log-format must be text or json; got 'bogus'")) << spelling;
  }
}

}  // namespace
}  // namespace cnp::security_testing
