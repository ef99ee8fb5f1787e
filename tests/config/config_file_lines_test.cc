// A bad value in cnp-server's --config file is reported where the operator wrote it,
// FILE:LINE:COLUMN (counted from 1, as editors show them), with the key as written, what is
// wrong and what to write: before, it named the flag (`--max-queue must be ...`), which an
// operator who never typed that flag looks for on the command line. The same value given as a
// flag is still named as the flag, a flag absl cannot read too. Either way the server exits 2
// before anything starts.
//
// And a plaintext listener beyond loopback is refused with the configuration (exit 2, no worker
// started), where it was refused only once the workers had started, with exit 1.
//
// Every case runs the real cnp-server and compares its whole stderr.
#include <sys/stat.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/process_limits.h"
#include "tests/support/files.h"
#include "tests/support/server_process.h"
#include "tests/support/spawn.h"

namespace cnp {
namespace {

using ::cnp::testing::MakeTempDir;
using ::cnp::testing::Runfile;
using ::cnp::testing::ServerOptions;
using ::cnp::testing::ServerProcess;
using ::cnp::testing::ShortTempDir;
using ::cnp::testing::WriteFile;
using ::testing::HasSubstr;
using ::testing::Not;

class ConfigFileLinesTest : public ::testing::Test {
 protected:
  // The file an operator would write: where to listen (line 1) and one worker (line 2), then
  // `rest` from line 3 on.
  std::string Config(const std::string& rest) {
    WriteFile(file_, absl::StrCat("listen: unix:", dir_, "/cnp.sock\nworkers: 1\n", rest), 0644);
    return file_;
  }

  // cnp-server with the test functions and `args`.
  std::unique_ptr<ServerProcess> Launch(std::vector<std::string> args) {
    args.insert(args.begin(), "--python-path=" + Runfile("tests/functions/server"));
    return ServerProcess::Launch({.args = std::move(args), .fresh_socket = false});
  }

  // Refused with exit 2 and exactly `message` on stderr, before any worker started.
  void ExpectRefused(ServerProcess& server, const std::string& message) {
    // A server that started would never exit by itself.
    ASSERT_FALSE(server.ready()) << server.Log();
    EXPECT_EQ(server.ExitCode(), 2) << server.Log();
    EXPECT_EQ(server.Log(), absl::StrCat("cnp-server: ", message, "\n"));
  }

  const std::string dir_ = ShortTempDir();
  const std::string file_ = dir_ + "/cnp.yaml";
};

TEST_F(ConfigFileLinesTest, AStringWhereANumberGoesIsReportedAtItsValue) {
  auto server = Launch({"--config=" + Config("max-queue: lots\n")});
  ExpectRefused(*server, absl::StrCat(file_, ":3:12: max-queue: expected a whole number, found "
                                             "'lots'; write e.g. 'max-queue: 256' (the default)"));
  // The key as the operator spelt it.
  auto underscored = Launch({"--config=" + Config("\nmax_call_bytes: [1]\n")});
  ExpectRefused(*underscored,
                absl::StrCat(file_, ":4:17: max_call_bytes: expected a whole number, found a "
                                    "list; write e.g. 'max_call_bytes: 67174400' (the default)"));
}

TEST_F(ConfigFileLinesTest, AValueOutOfRangeIsReportedAtItsLineAndAsAFlagOnTheCommandLine) {
  auto in_file = Launch({"--config=" + Config("max-queue:   -1\n")});
  ExpectRefused(*in_file,
                absl::StrCat(file_, ":3:14: max-queue: must be 0 (no call waits) or more; got -1"));

  // Given on the command line, over a good value in the file: the flag's.
  auto on_command_line = Launch({"--config=" + Config("max-queue: 10\n"), "--max-queue=-1"});
  ExpectRefused(*on_command_line, "--max-queue must be 0 (no call waits) or more; got -1");

  // The checks that once named only the flag.
  auto docs = Launch({"--config=" + Config("call-timeout: 60s\nmax-docs-per-call: 0\n")});
  ExpectRefused(*docs, absl::StrCat(file_, ":4:20: max-docs-per-call: must be 1 or more; got 0"));
  auto level = Launch({"--config=" + Config("log-level: loud\n")});
  ExpectRefused(*level, absl::StrCat(file_, ":3:12: log-level: must be debug, info, warning or "
                                            "error; got 'loud'"));
}

// A value the command line overrides is still checked where the file gives it: before, a
// wrong value in the file went unseen whenever a flag replaced it, until the day the flag was
// dropped.
TEST_F(ConfigFileLinesTest, AFileValueOutOfRangeIsRefusedEvenWhenAFlagOverridesIt) {
  WriteFile(file_, absl::StrCat("listen: unix:", dir_, "/cnp.sock\nworkers: -4\n"), 0644);
  auto workers = Launch({"--config=" + file_, "--workers=1"});
  ExpectRefused(*workers, absl::StrCat(file_, ":2:10: workers: must be between 0 (one per CPU "
                                              "core) and ", kMaxWorkerProcesses, "; got -4"));
  auto spares = Launch({"--config=" + Config("spare-session-workers: -3\n"),
                        "--spare-session-workers=1"});
  ExpectRefused(*spares, absl::StrCat(file_, ":3:24: spare-session-workers: must be 0 (none) or "
                                             "more; got -3"));
}

// A whole number past the setting's type says so, with the bound (before: "expected a whole
// number, found '99999999999999'", of a whole number).
TEST_F(ConfigFileLinesTest, AWholeNumberTooLargeSaysTheBound) {
  auto in_file = Launch({"--config=" + Config("max-queue: 99999999999999\n")});
  ExpectRefused(*in_file, absl::StrCat(file_, ":3:12: max-queue: too large (at most 2147483647); "
                                              "found 99999999999999"));
  auto on_command_line = Launch({"--config=" + Config(""), "--max-queue=-99999999999999"});
  ExpectRefused(*on_command_line,
                "--max-queue=-99999999999999: too small (at least -2147483648)");
}

// An access log the server cannot open is a setting to fix: exit 2 (which the unit does not
// restart) before any worker starts, named at its line. Before, it was found once the workers
// had started, exit 1, and systemd restarted the server every second.
TEST_F(ConfigFileLinesTest, AnAccessLogInAMissingDirectoryIsABadSetting) {
  const std::string log = dir_ + "/missing/access.log";
  auto server = Launch({"--config=" + Config(absl::StrCat("access-log: ", log, "\n"))});
  ExpectRefused(*server, absl::StrCat(file_, ":3:13: access-log: cannot open ", log,
                                      ": No such file or directory (create ", dir_,
                                      "/missing, writable by the server's user; the packaged "
                                      "unit's LogsDirectory=cnp makes /var/log/cnp)"));
}

TEST_F(ConfigFileLinesTest, AnUnknownKeyIsRefusedWithTheSettingItProbablyMeant) {
  auto misspelt = Launch({"--config=" + Config("max-queu: 10\n")});
  ExpectRefused(*misspelt, absl::StrCat(file_, ":3:1: max-queu: unknown setting; did you mean "
                                               "'max-queue'? (cnp-server --help lists every "
                                               "setting; each is a key here)"));
  // Nothing close: no guess.
  auto unrelated = Launch({"--config=" + Config("  # indented comment\ncolour: blue\n")});
  ExpectRefused(*unrelated, absl::StrCat(file_, ":4:1: colour: unknown setting (cnp-server "
                                                "--help lists every setting; each is a key here)"));
}

TEST_F(ConfigFileLinesTest, ABadListElementIsReportedAtTheElement) {
  auto user = Launch(
      {"--config=" + Config("allow-uid:\n  - root\n  - no-such-user-here\nmax-queue: 3\n")});
  ExpectRefused(*user, absl::StrCat(file_, ":5:5: allow-uid: no user named 'no-such-user-here' "
                                           "(give a user name or a number)"));

  auto flow = Launch({"--config=" + Config("allow-module: [svc_fns, {a: 1}]\n")});
  ExpectRefused(*flow, absl::StrCat(file_, ":3:25: allow-module: expected a list of strings, "
                                           "found a map in the list; write each element as one "
                                           "string"));

  // The same user on the command line is the flag's.
  auto flag = Launch({"--config=" + Config(""), "--allow-uid=root,no-such-user-here"});
  ExpectRefused(*flag, "--allow-uid: no user named 'no-such-user-here' (give a user name or a "
                       "number)");
}

TEST_F(ConfigFileLinesTest, ACheckOfTwoKeysNamesTheLineOfTheOneItIsAbout) {
  // The memory bound is what is too small: its line, and the other key's line in the words.
  auto memory = Launch(
      {"--config=" + Config("max-call-bytes: 16777216\nmax-grpc-memory: 16777216\n")});
  ExpectRefused(*memory, absl::StrCat(file_, ":4:18: max-grpc-memory: must be at least twice "
                                             "max-call-bytes at line 3 (33554432): gRPC holds a "
                                             "call's request and its answer at once; got "
                                             "16777216"));
  // A certificate without its key: the certificate's line, the one the operator wrote.
  auto tls = Launch({"--config=" + Config("max-queue: 3\ntls-cert: /etc/cnp/server.pem\n")});
  ExpectRefused(*tls, absl::StrCat(file_, ":4:11: tls-cert: needs tls-key too; give both or "
                                          "neither"));
}

// yaml-cpp's Load reads the first document only: the settings after a `---` were silently
// left at their defaults.
TEST_F(ConfigFileLinesTest, ASecondYamlDocumentIsRefusedAtItsLine) {
  auto second = Launch({"--config=" + Config("max-queue: 3\n---\nallow-module: [svc_fns]\n")});
  ExpectRefused(*second, absl::StrCat(file_, ":4:1: a second YAML document; cnp-server reads "
                                             "one: move its settings above this `---` and "
                                             "remove it"));
  // A `---` that starts the file starts its one document.
  WriteFile(file_, absl::StrCat("---\nlisten: unix:", dir_, "/cnp.sock\nworkers: 1\n"
                                "max-queue: -1\n"), 0644);
  auto first = Launch({"--config=" + file_});
  ExpectRefused(*first,
                absl::StrCat(file_, ":4:12: max-queue: must be 0 (no call waits) or more; got -1"));
}

// absl reads `inf` (and any length) as a duration, but the server converted them to clocks'
// counts that overflow: --drain-delay=inf drained not at all, --first-call-timeout=inf closed
// idle connections after about a second.
TEST_F(ConfigFileLinesTest, AnInfiniteOrOverlongDurationIsRefused) {
  for (const char* flag : {"drain-delay", "first-call-timeout", "max-connection-idle",
                           "shutdown-grace"}) {
    SCOPED_TRACE(flag);
    auto server = Launch({"--config=" + Config(""), absl::StrCat("--", flag, "=inf")});
    ExpectRefused(*server, absl::StrCat("--", flag, " must be at most 8760h (a year); got inf"));
  }
  auto call = Launch({"--config=" + Config(""), "--call-timeout=300000h"});
  ExpectRefused(*call, "--call-timeout must be at most 8760h (a year); got 300000h");
  auto in_file = Launch({"--config=" + Config("first-call-timeout: inf\n")});
  ExpectRefused(*in_file, absl::StrCat(file_, ":3:21: first-call-timeout: must be at most 8760h "
                                              "(a year); got inf"));
  // A year itself is taken: the check refuses no length an operator means.
  auto year =
      Launch({"--config=" + Config("first-call-timeout: 8760h\nmax-docs-per-call: 0\n")});
  ExpectRefused(*year, absl::StrCat(file_, ":4:20: max-docs-per-call: must be 1 or more; got 0"));
}

// The command line splits a list flag's value at commas (--allow-uid=root,daemon); the file
// took `allow-uid: "root,daemon"` as one user, and `allow-module: "a,b"` as one prefix.
TEST_F(ConfigFileLinesTest, AListStringWithCommasIsSplitAsOnTheCommandLine) {
  auto scalar = Launch({"--config=" + Config("allow-uid: \"root,no-such-user-here\"\n")});
  ExpectRefused(*scalar, absl::StrCat(file_, ":3:12: allow-uid: no user named "
                                             "'no-such-user-here' (give a user name or a "
                                             "number)"));
  auto element = Launch({"--config=" + Config("allow-uid:\n  - root,no-such-user-here\n")});
  ExpectRefused(*element, absl::StrCat(file_, ":4:5: allow-uid: no user named "
                                              "'no-such-user-here' (give a user name or a "
                                              "number)"));
  // An empty element between values is refused, as on the command line.
  auto doubled = Launch({"--config=" + Config("allow-module: \"a,,b\"\n")});
  ExpectRefused(*doubled, absl::StrCat(file_, ":3:15: allow-module: an empty element (two commas "
                                              "together, or one at an end); write the values "
                                              "separated by single commas"));
  auto trailing = Launch({"--config=" + Config("allow-module:\n  - a,\n")});
  ExpectRefused(*trailing, absl::StrCat(file_, ":4:5: allow-module: an empty element (two "
                                               "commas together, or one at an end); write the "
                                               "values separated by single commas"));
  // Nothing but commas is no value, as --allow-uid=, is.
  auto commas = Launch({"--config=" + Config("allow-module: \",\"\n")});
  ExpectRefused(*commas, absl::StrCat(file_, ":3:15: allow-module: an empty value; give at least "
                                             "one, or leave the key out"));
}

// Found by a flags probe: `insecure: yes` (and y, t, 1) was taken for true, as absl reads a
// flag; the file is YAML 1.2, whose booleans are true and false, and another reader (or the
// operator) takes `yes` for a string. Each is refused at its value, as `on` was.
TEST_F(ConfigFileLinesTest, OnlyYamlBooleansAreTakenForASwitch) {
  for (const char* word : {"yes", "y", "1", "t", "on"}) {
    auto server = Launch({"--config=" + Config(absl::StrCat("insecure: ", word, "\n"))});
    ExpectRefused(*server, absl::StrCat(file_, ":3:11: insecure: expected true or false, found '",
                                        word, "'; write e.g. 'insecure: false' (the default)"));
  }
}

// A flag absl cannot read was absl's error ("Illegal value 'lots' specified for flag
// 'workers'", "Unknown command line flag 'wrkers'"), exit 1; every other bad setting exits 2.
TEST_F(ConfigFileLinesTest, AFlagAbslCannotReadIsNamedAsWrittenAndExitsTwo) {
  auto type = Launch({"--config=" + Config(""), "--workers=lots"});
  ExpectRefused(*type, "--workers=lots: expected a whole number; write e.g. --workers=0 (the "
                       "default)");
  auto unknown = Launch({"--config=" + Config(""), "--max_queu=3"});
  ExpectRefused(*unknown, "unknown flag --max-queu; did you mean --max-queue? (cnp-server --help "
                          "lists every flag)");
  auto missing = Launch({"--config=" + Config(""), "--call-timeout"});
  ExpectRefused(*missing, "--call-timeout was given no value; write --call-timeout=1m");
}

// absl's own flags bypassed these checks: --undefok=pyhton_path started the server with the
// misspelt --pyhton_path ignored, and --flagfile/--fromenv read flags with absl's messages and
// exit 1. --help lists none of them; they are unknown flags like any other.
TEST_F(ConfigFileLinesTest, AbslsOwnFlagsAreUnknownFlags) {
  for (const auto& [args, name] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--undefok=pyhton_path", "--pyhton_path=/srv"}, "undefok"},
           {{"--flagfile=/dev/null"}, "flagfile"},
           {{"--fromenv=workers"}, "fromenv"},
           {{"-tryfromenv=workers"}, "tryfromenv"}}) {
    std::vector<std::string> argv = {"--config=" + Config("")};
    argv.insert(argv.end(), args.begin(), args.end());
    auto server = Launch(argv);
    ExpectRefused(*server,
                  absl::StrCat("unknown flag --", name, " (cnp-server --help lists every flag)"));
  }
}

// --help lists the settings, each of which a config file takes as a key, and none of absl's
// own flags: both follow from where a flag is defined (service/config/server_flags.cc), which
// a moved file must not silently empty.
TEST_F(ConfigFileLinesTest, HelpListsEverySettingAConfigFileTakesAndNoneOfAbsls) {
  ::cnp::testing::ProcessResult help =
      ::cnp::testing::RunWithInput({Runfile("service/cnp-server"), "--help"}, "");
  ASSERT_EQ(help.exit_code, 0) << help.err;
  std::vector<std::string> settings;
  for (absl::string_view line : absl::StrSplit(help.out, '\n')) {
    if (!absl::ConsumePrefix(&line, "  --")) continue;
    const std::string name(line.substr(0, line.find_first_of("= ,")));
    if (name != "help" && name != "version" && name != "config") settings.push_back(name);
  }
  EXPECT_GT(settings.size(), 40u) << help.out;
  for (const char* absl_own : {"flagfile", "fromenv", "tryfromenv", "undefok"}) {
    EXPECT_THAT(help.out, Not(HasSubstr(absl::StrCat("--", absl_own)))) << absl_own;
  }
  for (const std::string& setting : settings) {
    // A value no setting takes: refused for its value at its line, never as an unknown key.
    auto server = Launch({"--config=" + Config(absl::StrCat(setting, ": {not: a value}\n"))});
    ASSERT_FALSE(server->ready()) << setting;
    EXPECT_EQ(server->ExitCode(), 2) << setting;
    EXPECT_THAT(server->Log(), HasSubstr(absl::StrCat(file_, ":3:")));
    EXPECT_THAT(server->Log(), Not(HasSubstr("unknown setting"))) << setting;
  }
}

// --config is in --help, yet as a key it was an "unknown setting" that sent the reader to
// --help.
TEST_F(ConfigFileLinesTest, TheConfigKeySaysItBelongsOnTheCommandLine) {
  auto server = Launch({"--config=" + Config("config: /etc/cnp/other.yaml\n")});
  ExpectRefused(*server, absl::StrCat(file_, ":3:1: config: cannot be set in a config file "
                                             "(give --config on the command line)"));
}

// A token file that cannot be read was found only when the listeners opened, after the workers
// started: exit 1 with a log line, where every other bad setting exits 2 saying where it is.
TEST_F(ConfigFileLinesTest, AnUnreadableTokenFileIsABadSetting) {
  const std::string missing = dir_ + "/no-such-token";
  auto flag = Launch({"--config=" + Config(""), "--auth-token-file=" + missing});
  ExpectRefused(*flag, absl::StrCat("--auth-token-file: cannot read the token file ", missing,
                                    ": No such file or directory"));
  auto in_file = Launch({"--config=" + Config("auth-token-file: " + missing + "\n")});
  ExpectRefused(*in_file, absl::StrCat(file_, ":3:18: auth-token-file: cannot read the token "
                                               "file ", missing, ": No such file or directory"));
}

// The file's second listener names the first one's socket again: refused at its line, not
// bound twice once the workers had started.
TEST_F(ConfigFileLinesTest, AnAddressListedTwiceIsRefusedAtItsSecondLine) {
  WriteFile(file_,
            absl::StrCat("listen:\n  - unix:", dir_, "/cnp.sock\n  - unix:", dir_,
                         "/./cnp.sock\nworkers: 1\n"),
            0644);
  auto server = Launch({"--config=" + file_});
  ExpectRefused(*server, absl::StrCat(file_, ":3:5: listen: unix:", dir_,
                                      "/./cnp.sock is already listed (as unix:", dir_,
                                      "/cnp.sock); list each address once"));
}

// The worker binary is a script that leaves a mark when it runs, then runs the real worker: a
// refused server must leave none, and with `insecure: true` the same file starts a worker that
// leaves one (so the mark is no accident of the script).
TEST_F(ConfigFileLinesTest, APlaintextListenerBeyondLoopbackIsRefusedBeforeAnyWorkerStarts) {
  const std::string scripts = MakeTempDir("worker");
  ASSERT_EQ(::chmod(scripts.c_str(), 0755), 0);
  const std::string mark = scripts + "/started";
  const std::string worker = scripts + "/cnp-worker";
  WriteFile(worker,
            absl::StrCat("#!/bin/sh\necho $$ >> ", mark, "\nexec ",
                         Runfile("service/worker/cnp-worker"), " \"$@\"\n"),
            0755);
  const std::string listeners =
      absl::StrCat("listen:\n  - unix:", dir_, "/cnp.sock\n  - 0.0.0.0:0\nworkers: 1\n");

  WriteFile(file_, listeners, 0644);
  auto refused = ServerProcess::Launch(
      {.args = {"--python-path=" + Runfile("tests/functions/server"), "--config=" + file_},
       .fresh_socket = false,
       .worker_binary = worker});
  ExpectRefused(*refused,
                absl::StrCat(file_, ":3:5: listen: refusing to listen on 0.0.0.0:0 in plaintext: "
                                    "anyone who can reach it could run functions and read what "
                                    "they return. Set tls-cert and tls-key (and tls-client-ca or "
                                    "auth-token-file to say who may call), listen on 127.0.0.1 "
                                    "or a unix socket, or set insecure: true if the network is "
                                    "trusted"));
  struct stat st {};
  EXPECT_NE(::stat(mark.c_str(), &st), 0) << "a worker was started";
  EXPECT_THAT(refused->Log(), Not(HasSubstr("starting 1 workers")));

  // A token would cross the network in plaintext: refused as early, at the token's line.
  WriteFile(dir_ + "/token", "t0ken-for-plaintext-refusal\n", 0600);
  WriteFile(file_,
            absl::StrCat(listeners, "insecure: true\nauth-token-file: ", dir_, "/token\n"), 0644);
  auto token = ServerProcess::Launch(
      {.args = {"--python-path=" + Runfile("tests/functions/server"), "--config=" + file_},
       .fresh_socket = false,
       .worker_binary = worker});
  ExpectRefused(*token, absl::StrCat(file_, ":6:18: auth-token-file: refusing to accept a bearer "
                                            "token in plaintext on 0.0.0.0:0: it would cross the "
                                            "network readable by anyone on the way; add tls-cert "
                                            "and tls-key"));
  EXPECT_NE(::stat(mark.c_str(), &st), 0) << "a worker was started";

  WriteFile(file_, absl::StrCat(listeners, "insecure: true\n"), 0644);
  auto allowed = ServerProcess::Launch(
      {.args = {"--python-path=" + Runfile("tests/functions/server"), "--config=" + file_},
       .fresh_socket = false,
       .worker_binary = worker});
  ASSERT_TRUE(allowed->ready()) << allowed->Log();
  ASSERT_TRUE(allowed->WaitForLog("worker 0 started", absl::Seconds(30))) << allowed->Log();
  EXPECT_EQ(::stat(mark.c_str(), &st), 0) << "the script leaves no mark: the test proves nothing";
}

}  // namespace
}  // namespace cnp
