// cnp-server's handling of bad settings, each found by an operator-experience review with the
// installed binaries: a setting that was silently ignored (--config FILE with a space, a list
// flag with no value), one that aborted the server (--config=<directory>, a unix path whose
// P.direct is too long), negative counts and durations taken as defaults, config keys that
// reached absl's own flags (flagfile), duplicate keys, and --version without a version.
// Every case starts the real binary and asserts its exit code and message.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/version.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/server_process.h"
#include "tests/support/spawn.h"

namespace cnp {
namespace {

using ::cnp::testing::ProcessResult;
using ::cnp::testing::Runfile;
using ::cnp::testing::RunWithInput;
using ::cnp::testing::ServerProcess;
using ::cnp::testing::ShortTempDir;
using ::cnp::testing::WriteFile;
using ::testing::HasSubstr;
using ::testing::Not;

// cnp-server with the test functions, listening where the arguments say (or on a socket of
// its own in `dir`), one worker unless the arguments say otherwise.
std::unique_ptr<ServerProcess> Launch(const std::string& dir, std::vector<std::string> args) {
  args.insert(args.begin(), {"--listen=unix:" + dir + "/cnp.sock",
                             "--python-path=" + Runfile("tests/functions/server")});
  return ServerProcess::Launch({.args = std::move(args), .fresh_socket = false});
}

// A server that must refuse to start: exit 2 and `message` in its log.
void ExpectRefused(ServerProcess& server, const std::string& message) {
  // A server that started would never exit by itself.
  ASSERT_FALSE(server.ready()) << server.Log();
  EXPECT_EQ(server.ExitCode(), 2) << server.Log();
  EXPECT_THAT(server.Log(), HasSubstr(message));
}

// A config file holding `yaml` that the server refuses, saying `problem` at its place.
void ExpectFileRefused(const std::string& dir, const std::string& yaml,
                       const std::string& problem) {
  SCOPED_TRACE(yaml);
  WriteFile(dir + "/cnp.yaml", yaml, 0644);
  auto server = Launch(dir, {"--workers=1", "--config=" + dir + "/cnp.yaml"});
  ExpectRefused(*server, dir + "/cnp.yaml:");
  EXPECT_THAT(server->Log(), HasSubstr(problem));
}

// Found by a review: a tab in the indentation was "illegal map value", never naming the tab.
TEST(ConfigFileTest, ATabInTheIndentationIsNamed) {
  ExpectFileRefused(ShortTempDir(), "workers: 1\nallow-module:\n  - myviews\n\t- other\n",
                    "(line 4 indents with a tab: YAML indents with spaces only)");
}

// A key indented under a value was yaml-cpp's "illegal map value" alone (an operator's trial).
TEST(ConfigFileTest, AKeyIndentedUnderAValueIsExplained) {
  ExpectFileRefused(ShortTempDir(), "workers: 1\n  max-queue: 8\n",
                    "illegal map value (a `key: value` where none may start: indent this line as "
                    "its siblings are, or quote a value that holds \": \")");
}

// yaml-cpp read an unclosed quote to the end of the file: the settings after it were left at
// their defaults, the --allow-module list among them, without a word.
TEST(ConfigFileTest, AQuoteNeverClosedIsRefused) {
  ExpectFileRefused(ShortTempDir(),
                    "python-path: \"/srv/views\nallow-module:\n  - myviews\n",
                    "this quoted string is never closed");
}

// 1. --config FILE (a space, not '=') was ignored: the server started with the defaults and no
// --allow-module limit.
TEST(ConfigFileTest, ConfigWithASpaceIsRead) {
  const std::string dir = ShortTempDir();
  auto missing = Launch(dir, {"--workers=1", "--config", dir + "/none.yaml"});
  ExpectRefused(*missing, "cannot read config file " + dir + "/none.yaml");

  WriteFile(dir + "/cnp.yaml", "workers: lots\n", 0644);
  auto read = Launch(dir, {"--config", dir + "/cnp.yaml"});
  ExpectRefused(*read, dir + "/cnp.yaml:1:10: workers: expected a whole number");

  auto trailing = Launch(dir, {"--workers=1", "--config"});
  ExpectRefused(*trailing, "--config was given no value; write --config=/etc/cnp/cnp-server.yaml");

  // Two files: the first one was dropped without a word.
  WriteFile(dir + "/other.yaml", "max-queue: 3\n", 0644);
  auto twice = Launch(dir, {"--workers=1", "--config=" + dir + "/other.yaml", "--config",
                            dir + "/cnp.yaml"});
  ExpectRefused(*twice, "--config was given twice");
}

// 1. A list flag with no value (a trailing --allow-module, --allow-module= from an empty shell
// variable, or one followed by the next flag) was dropped, and every module was allowed.
TEST(ListFlagTest, AListFlagWithNoValueIsRefused) {
  const std::string dir = ShortTempDir();
  const std::vector<std::vector<std::string>> cases = {
      {"--allow-module"},
      {"--allow-module="},
      {"--allow-module=,"},
      {"--allow-module", "--max-queue=3"},
      {"--python-path"},
      {"--couchdb-allow="},
  };
  for (const std::vector<std::string>& args : cases) {
    std::vector<std::string> with_workers = {"--workers=1"};
    with_workers.insert(with_workers.end(), args.begin(), args.end());
    auto server = Launch(dir, with_workers);
    const std::string flag = args[0].substr(0, args[0].find('='));
    SCOPED_TRACE(args[0]);
    ExpectRefused(*server, flag + " was given no value");
  }
  auto allow = Launch(dir, {"--workers=1", "--allow-module"});
  EXPECT_THAT(allow->Log(), HasSubstr("without it every module on the Python path may run"));
}

TEST(ListFlagTest, AnEmptyListInTheConfigFileIsRefused) {
  const std::string dir = ShortTempDir();
  for (const char* yaml : {"allow-module: []\n", "allow-module: ''\n",
                           "allow-module:\n  - svc_fns\n  - \"\"\n"}) {
    ExpectFileRefused(dir, yaml, ": allow-module: an empty");
  }
}

// An empty security setting (--auth-token-file=$TOKEN with TOKEN unset) started a server
// that let every local user call, with nothing but a warning to show it.
TEST(StringFlagTest, AnEmptyStringSettingIsRefusedNotTakenForItsDefault) {
  const std::string dir = ShortTempDir();
  for (const char* flag : {"--auth-token-file", "--tls-client-ca", "--access-log"}) {
    SCOPED_TRACE(flag);
    auto server = Launch(dir, {"--workers=1", std::string(flag) + "="});
    ExpectRefused(*server, std::string(flag) + "= is empty; give a value, or leave the flag out");
  }
  for (const char* yaml : {"auth-token-file: ''\n", "socket-group: \"\"\n"}) {
    ExpectFileRefused(dir, yaml, ": an empty value; give one, or leave the key out");
  }
}

// --socket-group=4294967295 is chown's "leave the group": the sockets stayed 0600 without a
// word (config review finding).
TEST(SocketGroupTest, TheNoChangeGroupIdIsRefused) {
  const std::string dir = ShortTempDir();
  auto server = Launch(dir, {"--workers=1", "--socket-group=4294967295"});
  ExpectRefused(*server, "--socket-group: 4294967295 is no group id");
}

// A missing certificate or a key others may read failed only when the server listened, after
// every worker had started, with exit 1, which systemd's unit restarts every second (config
// review finding). They are the settings' mistakes, found first, like the token file.
TEST(TlsFileTest, AMissingCertificateOrAnUnsafeKeyIsABadSetting) {
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/key.pem", "-----BEGIN PRIVATE KEY-----\n", 0644);
  auto missing = Launch(dir, {"--workers=1", "--tls-cert=" + dir + "/none.pem",
                              "--tls-key=" + dir + "/key.pem"});
  ExpectRefused(*missing, "--tls-cert: ");
  EXPECT_THAT(missing->Log(), Not(HasSubstr("starting")));
  WriteFile(dir + "/cert.pem", "-----BEGIN CERTIFICATE-----\n", 0644);
  auto readable = Launch(dir, {"--workers=1", "--tls-cert=" + dir + "/cert.pem",
                               "--tls-key=" + dir + "/key.pem"});
  ExpectRefused(*readable, "the private key (--tls-key) " + dir + "/key.pem has mode 0644");
  ASSERT_EQ(::chmod((dir + "/key.pem").c_str(), 0600), 0);
  WriteFile(dir + "/cnp.yaml", "tls-client-ca: " + dir + "/none.pem\n", 0644);
  auto ca = Launch(dir, {"--workers=1", "--config=" + dir + "/cnp.yaml",
                         "--tls-cert=" + dir + "/cert.pem", "--tls-key=" + dir + "/key.pem"});
  ExpectRefused(*ca, dir + "/cnp.yaml:1:");
}

// 2. --config=<a directory> aborted with an uncaught std::ios_base::failure (exit 134).
TEST(ConfigFileTest, ADirectoryOrAnEndlessFileIsAClearError) {
  const std::string dir = ShortTempDir();
  auto directory = Launch(dir, {"--workers=1", "--config=" + dir});
  ExpectRefused(*directory, "cannot read config file " + dir + ": it is a directory");

  // A device is no file of settings: it is not read, and not met with the advice of the
  // trust check (tests/security/files/trusted_files_test) for a file every user may write,
  // which was `chmod go-w /dev/null` (found by a review). The size bound still stops a file too
  // large to be settings.
  for (const char* device : {"/dev/zero", "/dev/null"}) {
    auto endless = Launch(dir, {"--workers=1", absl::StrCat("--config=", device)});
    ExpectRefused(*endless, absl::StrCat("cannot read config file ", device,
                                         ": it is a device, not a file; give the YAML file"));
    EXPECT_THAT(endless->Log(), Not(HasSubstr("chmod"))) << device;
  }
  // A socket cannot be opened at all: said as what it is, not "No such device or address".
  const std::string socket_path = dir + "/cnp.sock";
  const int listening = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{.sun_family = AF_UNIX, .sun_path = {}};
  socket_path.copy(address.sun_path, sizeof address.sun_path - 1);
  ASSERT_EQ(::bind(listening, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  auto socket = Launch(dir, {"--workers=1", "--config=" + socket_path});
  ExpectRefused(*socket, "cannot read config file " + socket_path +
                             ": it is a socket, not a file; give the YAML file");
  ::close(listening);
  WriteFile(dir + "/huge.yaml", std::string((1 << 20) + 1, '#'), 0644);
  auto huge = Launch(dir, {"--workers=1", "--config=" + dir + "/huge.yaml"});
  ExpectRefused(*huge, "cannot read config file " + dir + "/huge.yaml: larger than 1048576 bytes");
}

// 3. Negative counts and durations were taken without a word: --workers=-3 meant CPU cores,
// --max-sessions=-1 turned direct sessions off, --shutdown-grace=-1s waited "up to -1s". And
// counts of processes had no ceiling: --workers=100000 forked until the OOM killer ended the
// server, and --max-sessions would start as many session workers (found by a review).
struct OutOfRange {
  std::string flag;
  std::string value;
  std::string range;
};

void PrintTo(const OutOfRange& c, std::ostream* out) { *out << c.flag << "=" << c.value; }

class NegativeSettingTest : public ::testing::TestWithParam<OutOfRange> {};

TEST_P(NegativeSettingTest, IsRefusedOnTheCommandLine) {
  const OutOfRange& c = GetParam();
  auto server = Launch(ShortTempDir(), {absl::StrCat("--", c.flag, "=", c.value)});
  ExpectRefused(*server, absl::StrCat("--", c.flag, " must be ", c.range, "; got ", c.value));
}

TEST_P(NegativeSettingTest, IsRefusedInTheConfigFileAtItsLine) {
  const OutOfRange& c = GetParam();
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/cnp.yaml", absl::StrCat("log-level: info\n", c.flag, ": ", c.value, "\n"),
            0644);
  auto server = Launch(dir, {"--config=" + dir + "/cnp.yaml"});
  // At the value's line and column (after "KEY: "), without the flag the operator never typed.
  ExpectRefused(*server, absl::StrCat(dir, "/cnp.yaml:2:", c.flag.size() + 3, ": ", c.flag,
                                      ": must be ", c.range, "; got ", c.value));
  EXPECT_THAT(server->Log(), Not(HasSubstr("--" + c.flag)));
}

INSTANTIATE_TEST_SUITE_P(
    Settings, NegativeSettingTest,
    ::testing::Values(
        OutOfRange{"workers", "-3", "between 0 (one per CPU core) and 256"},
        // Just past the ceiling: a build without it starts that many workers, not 100000.
        OutOfRange{"workers", "257", "between 0 (one per CPU core) and 256"},
        OutOfRange{"grpc-threads", "-1", "between 0 (CPU cores, at most 4) and 256"},
        // Found by a review: a million threads aborted the server after its workers were up.
        OutOfRange{"grpc-threads", "257", "between 0 (CPU cores, at most 4) and 256"},
        // Found by a review: INT_MAX overflowed the int the upload threads are added to, and
        // every Upload was refused.
        OutOfRange{"max-waiting-uploads", "2147483647", "between 0 (no upload waits) and 1000000"},
        // Found by a review: never read before its check, so -1 passed and turned rotation off.
        OutOfRange{"log-max-bytes", "-1", "0 (never) or more"},
        OutOfRange{"max-queue", "-1", "0 (no call waits) or more"},
        OutOfRange{"max-sessions", "-1", "between 0 (no direct sessions) and 256"},
        OutOfRange{"max-sessions", "257", "between 0 (no direct sessions) and 256"},
        OutOfRange{"spare-session-workers", "-2", "0 (none) or more"},
        OutOfRange{"max-calls-per-worker", "-1", "0 (never) or more"},
        OutOfRange{"worker-memory-mb", "-1", "0 (no cap), or between 64 and 8796093022207"},
        // Found by a review: a cap below what a worker holds as it starts was taken, and the
        // workers were replaced every 2 s for ever.
        OutOfRange{"worker-memory-mb", "16", "0 (no cap), or between 64 and 8796093022207"},
        OutOfRange{"shutdown-grace", "-1s", "0s (calls in flight are not waited for) or longer"},
        OutOfRange{"drain-delay", "-500ms", "0s (no drain) or longer"}),
    [](const ::testing::TestParamInfo<OutOfRange>& info) {
      return absl::StrCat(absl::StrReplaceAll(info.param.flag, {{"-", "_"}}),
                          absl::StartsWith(info.param.value, "-") ? "" : "_" + info.param.value);
    });

// Found by a review: 1000 was taken without a word, and 64 spares started (1.5 GiB). The bound
// is named as the operator writes it, on the command line and in the file.
TEST(NegativeSettingTest, MoreSpareSessionWorkersThanSessionsAreRefused) {
  auto flag = Launch(ShortTempDir(), {"--spare-session-workers=65"});
  ExpectRefused(*flag, "--spare-session-workers must be between 0 (none) and --max-sessions (64); "
                       "got 65");
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/cnp.yaml", "max-sessions: 8\nspare-session-workers: 9\n", 0644);
  auto file = Launch(dir, {"--config=" + dir + "/cnp.yaml"});
  ExpectRefused(*file, "spare-session-workers: must be between 0 (none) and max-sessions at line 1 "
                       "(8); got 9");
}

// Found by a flags probe: a directory that is no virtualenv was found only by the first worker,
// which exited, and the server exited 1 telling the operator to check --python-path.
TEST(NegativeSettingTest, AVirtualenvWithoutPyvenvCfgIsRefusedAtStart) {
  const std::string dir = ShortTempDir();
  auto server = Launch(dir, {"--virtualenv=" + dir});
  ExpectRefused(*server, absl::StrCat("--virtualenv ", dir, " is not a virtualenv: it has no "
                                      "pyvenv.cfg (make one with python3 -m venv DIR, and give "
                                      "DIR)"));
}

// Found by a flags probe: with no direct sessions (--max-sessions=0) spares asked for were
// ignored without a word; the default one is still taken (it is not started).
TEST(NegativeSettingTest, SparesAskedForWithNoDirectSessionsAreRefused) {
  auto asked = Launch(ShortTempDir(), {"--max-sessions=0", "--spare-session-workers=5"});
  ExpectRefused(*asked, "--spare-session-workers must be between 0 (none) and --max-sessions "
                        "(0); got 5");
  auto by_default = Launch(ShortTempDir(), {"--workers=1", "--max-sessions=0"});
  EXPECT_TRUE(by_default->ready()) << by_default->Log();
}

// The ceiling itself is allowed (256 sessions start no more than the spare workers).
TEST(NegativeSettingTest, TheCeilingItselfIsTaken) {
  auto server = Launch(ShortTempDir(), {"--workers=1", "--max-sessions=256"});
  EXPECT_TRUE(server->ready()) << server->Log();
}

TEST(NegativeSettingTest, TheAdapterRefusesNegativeWorkersAndEmptyLists) {
  const std::string adapter = Runfile("adapter/cnp-adapter");
  // Beyond cnp-server's ceiling too: the server it would start could not.
  for (const char* count : {"-1", "257"}) {
    ProcessResult workers = RunWithInput({adapter, absl::StrCat("--workers=", count)}, "");
    EXPECT_EQ(workers.exit_code, 2) << workers.err;
    EXPECT_THAT(workers.err, HasSubstr(absl::StrCat("--workers must be between 0 (the server's "
                                                    "default, one per CPU core) and 256; got ",
                                                    count)));
  }
  // A trailing list flag was absl's "Missing the value" (exit 1), where the server says which
  // flag and why (exit 2); both now read list flags with common/list_flags.h.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--allow-module="}, {"--allow-module", ""}, {"--allow-module", "--workers=1"},
           {"--python-path=,"}, {"--allow-module"}, {"--python-path"}}) {
    std::vector<std::string> argv = {adapter};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessResult run = RunWithInput(argv, "");
    EXPECT_EQ(run.exit_code, 2) << args[0] << ": " << run.err;
    EXPECT_THAT(run.err, HasSubstr(args[0].substr(0, args[0].find('=')) +
                                   " was given no value"));
  }
  // Found by a review: a value absl refuses was absl's "Illegal value" (exit 1), where
  // cnp-server says what to write (exit 2).
  for (const auto& [arg, says] : std::vector<std::pair<std::string, std::string>>{
           {"--call-timeout=abc", "--call-timeout=abc: expected a duration such as 30s or 2m"},
           {"--workers=lots", "--workers=lots: expected a whole number"},
           {"--stats=maybe", "--stats=maybe: expected true or false"},
           {"--max-line-bytes=99999999999999999999", "too large (at most"}}) {
    ProcessResult run = RunWithInput({adapter, arg}, "");
    EXPECT_EQ(run.exit_code, 2) << arg << ": " << run.err;
    EXPECT_THAT(run.err, HasSubstr(says)) << arg;
  }
  // An empty --target is not the host's default socket, where the adapter would have started
  // a server of its own.
  for (const char* empty : {"--target=", "-target="}) {
    ProcessResult run = RunWithInput({adapter, empty}, "");
    EXPECT_EQ(run.exit_code, 2) << empty << ": " << run.err;
    EXPECT_THAT(run.err, HasSubstr("--target was given no value")) << empty;
  }
  // An unknown flag: exit 2 and the flag it probably meant, as cnp-server says it (absl's own
  // message exited 1).
  ProcessResult typo = RunWithInput({adapter, "--max-line-byte=3"}, "");
  EXPECT_EQ(typo.exit_code, 2) << typo.err;
  EXPECT_THAT(typo.err, HasSubstr("unknown flag --max-line-byte; did you mean --max-line-bytes?"));
  // A value given apart is not a flag: the value's own message, not "unknown flag --1".
  ProcessResult apart = RunWithInput({adapter, "--workers", "-1"}, "");
  EXPECT_EQ(apart.exit_code, 2) << apart.err;
  EXPECT_THAT(apart.err, HasSubstr("--workers must be between 0"));
  EXPECT_THAT(apart.err, Not(HasSubstr("unknown flag")));
  ProcessResult bogus = RunWithInput({adapter, "--bogus"}, "");
  EXPECT_EQ(bogus.exit_code, 2) << bogus.err;
  EXPECT_THAT(bogus.err, HasSubstr("unknown flag --bogus (cnp-adapter --help lists every flag)"));
  // absl's own flags are unknown flags too: --undefok let a misspelt one pass silently, and
  // --flagfile/--fromenv read flags past these checks with absl's messages and exit 1.
  for (const auto& [absl_own, name] :
       std::vector<std::pair<std::string, std::string>>{{"--undefok=targt", "undefok"},
                                                        {"--flagfile=/dev/null", "flagfile"},
                                                        {"--fromenv=target", "fromenv"},
                                                        {"-tryfromenv=target", "tryfromenv"}}) {
    ProcessResult run = RunWithInput({adapter, absl_own, "--targt=unix:/nonexistent.sock"}, "");
    EXPECT_EQ(run.exit_code, 2) << absl_own << ": " << run.err;
    EXPECT_THAT(run.err, HasSubstr("unknown flag --" + name +
                                   " (cnp-adapter --help lists every flag)"))
        << absl_own;
  }
  ProcessResult allow = RunWithInput({adapter, "--allow-module"}, "");
  EXPECT_THAT(allow.err, HasSubstr("without it every module on the Python path may run"));
}

// A misspelt --preload-module is refused where it is written, by the server and by the adapter
// (which would otherwise replace a working server with one that cannot start), rather than
// logged by every worker that starts.
// `--FLAG=NAME` refused as no module name by cnp-server and by cnp-adapter, exit 2.
void ExpectNoModuleNameRefused(const std::string& dir, const std::string& flag,
                               const std::string& name) {
  const std::string given = absl::StrCat("--", flag, "=", name);
  auto server = Launch(dir, {"--workers=1", given});
  ExpectRefused(*server, given + ": not a module name");
  ProcessResult adapter = RunWithInput({Runfile("adapter/cnp-adapter"), given}, "");
  EXPECT_EQ(adapter.exit_code, 2) << adapter.err;
  EXPECT_THAT(adapter.err, HasSubstr(given + ": not a module name"));
}

TEST(PreloadModuleTest, ANameThatIsNoModuleIsRefusedAtStart) {
  const std::string dir = ShortTempDir();
  for (const char* name : {"my-views", "myviews.", "a..b", "1views", "views|2"}) {
    ExpectNoModuleNameRefused(dir, "preload-module", name);
  }
  WriteFile(dir + "/cnp.yaml", "preload-module:\n  - myviews\n  - my views\n", 0644);
  auto from_file = Launch(dir, {"--workers=1", "--config=" + dir + "/cnp.yaml"});
  ExpectRefused(*from_file, dir + "/cnp.yaml:3:5: preload-module: my views: not a module name");
  // Letters outside ASCII are Python's to judge, in the worker: not refused here.
  auto accented = Launch(dir, {"--workers=1", "--preload-module=vues_été"});
  EXPECT_TRUE(accented->ready()) << accented->Log();
}

// So is an --allow-module entry that no module can have: the server started with
// `allow-module: " "` or "*" and then refused every call as "not covered by --allow-module"
// (found by a security probe).
TEST(PreloadModuleTest, AnAllowedModuleThatCannotBeOneIsRefusedAtStart) {
  const std::string dir = ShortTempDir();
  for (const char* name : {" ", "*", ".", "myviews..", " myviews", "my-views"}) {
    ExpectNoModuleNameRefused(dir, "allow-module", name);
  }
  auto star = Launch(dir, {"--workers=1", "--allow-module=myviews.*"});
  ExpectRefused(*star, "there are no wildcards: a module allowed covers the modules below it");
  WriteFile(dir + "/cnp.yaml", "allow-module: [myviews, \"*\"]\n", 0644);
  auto from_file = Launch(dir, {"--workers=1", "--config=" + dir + "/cnp.yaml"});
  ExpectRefused(*from_file, "allow-module: *: not a module name");
}

// An --allow-module under which no function may ever run (the standard library, an installer)
// was accepted, and then every call to it refused: it is a bad setting, exit 2.
TEST(PreloadModuleTest, AnAllowedModuleThatNeverRunsIsRefusedAtStart) {
  const std::string dir = ShortTempDir();
  auto os = Launch(dir, {"--workers=1", "--allow-module=svc_fns,os.path"});
  ExpectRefused(*os, "--allow-module=os.path: module 'os.path' is part of Python's standard "
                     "library, and cnp-server never runs functions of the standard library: no "
                     "function under it can run; remove it from --allow-module");
  auto pip = Launch(dir, {"--workers=2", "--allow-module=pip"});
  ExpectRefused(*pip, "--allow-module=pip: module 'pip' belongs to 'pip'");
  EXPECT_THAT(pip->Log(), HasSubstr("no worker could start: --allow-module=pip: "));
}

// A --ready-fd that is not open was accepted, and "ready" written nowhere: the supervisor
// waiting on its pipe waited for good (found by a robustness probe).
TEST(ReadyFdTest, ADescriptorThatIsNotOpenIsRefused) {
  const std::string dir = ShortTempDir();
  auto closed = Launch(dir, {"--workers=1", "--ready-fd=99"});
  ExpectRefused(*closed, "--ready-fd=99 is not an open file descriptor of this process");
  auto negative = Launch(dir, {"--workers=1", "--ready-fd=-5"});
  ExpectRefused(*negative, "--ready-fd=-5 is not an open file descriptor");
}

// The same for --launch-lock-fd, which the server closes once it listens: one not open, or the
// server's stdin, was accepted without a word (found by a flags probe).
TEST(ReadyFdTest, ALaunchLockThatIsNotOpenOrIsStandardIsRefused) {
  const std::string dir = ShortTempDir();
  auto closed = Launch(dir, {"--workers=1", "--launch-lock-fd=99"});
  ExpectRefused(*closed, "--launch-lock-fd=99 is not an open file descriptor of this process: "
                         "cnp-adapter sets it to the descriptor of its launch lock; leave the "
                         "flag out");
  auto stdin_fd = Launch(dir, {"--workers=1", "--launch-lock-fd=0"});
  ExpectRefused(*stdin_fd, "--launch-lock-fd=0 is the server's standard input, output or error");
}

TEST(PreloadModuleTest, AWorkerStartTimeoutOfZeroIsRefused) {
  auto server = Launch(ShortTempDir(), {"--worker-start-timeout=0s"});
  ExpectRefused(*server, "--worker-start-timeout must be longer than 0s; got 0");
}

// 4. Config keys reached absl's own flags: `flagfile: /etc/passwd` was accepted and every line
// of that file printed as an error. Only cnp-server's settings may be set from the file.
TEST(ConfigFileTest, AbslFlagsAreUnknownSettings) {
  const std::string dir = ShortTempDir();
  for (const char* key : {"flagfile", "fromenv", "tryfromenv", "undefok", "helpfull"}) {
    SCOPED_TRACE(key);
    WriteFile(dir + "/cnp.yaml", absl::StrCat("workers: 1\n", key, ": /etc/passwd\n"), 0644);
    auto server = Launch(dir, {"--config=" + dir + "/cnp.yaml"});
    ExpectRefused(*server, absl::StrCat(dir, "/cnp.yaml:2:1: ", key, ": unknown setting"));
    EXPECT_THAT(server->Log(), Not(HasSubstr("root:")));
  }
}

// 4. yaml-cpp keeps both entries of a key written twice, and the last silently won.
TEST(ConfigFileTest, ADuplicateKeyIsRefusedAtItsSecondLine) {
  const std::string dir = ShortTempDir();
  const std::string file = dir + "/cnp.yaml";
  WriteFile(file, "workers: 1\nmax-queue: 3\nworkers: 2\n", 0644);
  auto server = Launch(dir, {"--config=" + file});
  ExpectRefused(*server, absl::StrCat(file, ":3:1: workers: set a second time (first at ",
                                      file, ":1:1)"));
  // The two spellings of one setting are one key.
  WriteFile(file, "max_queue: 1\nallow-module: [svc_fns]\nmax-queue: 2\n", 0644);
  auto spelt = Launch(dir, {"--workers=1", "--config=" + file});
  ExpectRefused(*spelt, absl::StrCat(file, ":3:1: max-queue: set a second time"));
}

// 5. A unix path of 101-107 bytes: the gRPC socket fitted, its P.direct did not, and the server
// crashed after "listening" (std::system_error, exit 134), leaving the socket file behind.
TEST(SocketPathTest, APathWhoseDirectSocketWouldNotFitIsRefusedBeforeListening) {
  const std::string dir = ShortTempDir();
  const std::string path = dir + "/" + std::string(104 - dir.size() - 1, 'p');
  ASSERT_EQ(path.size(), 104u);
  auto server = Launch(dir, {"--workers=1", "--listen=unix:" + path});
  ExpectRefused(*server, absl::StrCat("--listen=unix:", path, ": the direct-session socket next "
                                      "to it, ", path, ".direct, would be 111 bytes"));
  EXPECT_THAT(server->Log(), HasSubstr("or pass --max-sessions=0"));
  EXPECT_THAT(server->Log(), Not(HasSubstr("listening")));
  struct stat st {};
  EXPECT_NE(::stat(path.c_str(), &st), 0) << "a socket file was left at " << path;

  // Without direct sessions the path is fine.
  auto no_sessions = Launch(dir, {"--workers=1", "--max-sessions=0", "--listen=unix:" + path});
  EXPECT_TRUE(no_sessions->ready()) << no_sessions->Log();
}

// And a path too long itself: refused the same way, before any worker starts (it failed at the
// bind, once the workers had started, exit 1).
TEST(SocketPathTest, APathTooLongItselfIsRefusedBeforeAnyWorkerStarts) {
  const std::string dir = ShortTempDir();
  const std::string path = dir + "/" + std::string(128 - dir.size() - 1, 'p');
  for (const char* sessions : {"--max-sessions=4", "--max-sessions=0"}) {
    auto server = Launch(dir, {"--workers=1", sessions, "--listen=unix:" + path});
    ExpectRefused(*server, absl::StrCat("--listen=unix:", path, ": a unix socket path may have "
                                        "at most 107 bytes, and this one has 128"));
    EXPECT_THAT(server->Log(), Not(HasSubstr("worker"))) << sessions;
  }
}

// A socket directory the server cannot use (no parent to create it in, or one others may write
// to) was found once the workers had started, exit 1, which the unit restarts every second
// (found by an operator's trial); it is a setting to fix, exit 2, before any worker.
TEST(SocketPathTest, ASocketDirectoryToFixIsRefusedBeforeAnyWorkerStarts) {
  const std::string dir = ShortTempDir();
  auto orphan = Launch(dir, {"--workers=1", "--listen=unix:" + dir + "/no/such/cnp.sock"});
  ExpectRefused(*orphan, absl::StrCat("cannot create the socket directory ", dir,
                                      "/no/such: No such file or directory; create its parent "
                                      "first (mkdir -p ", dir, "/no)"));
  EXPECT_THAT(orphan->Log(), Not(HasSubstr("worker")));
  const std::string open = dir + "/open";
  ASSERT_EQ(::mkdir(open.c_str(), 0777), 0);
  ASSERT_EQ(::chmod(open.c_str(), 0777), 0);
  auto shared = Launch(dir, {"--workers=1", "--listen=unix:" + open + "/cnp.sock"});
  ExpectRefused(*shared, "the socket directory " + open + " has mode 0777");
  EXPECT_THAT(shared->Log(), Not(HasSubstr("worker")));
}

// The same refusals of values the config file gave name the file's line, as every other refusal
// of a value from the file does (an operator's probe: they named the flag).
TEST(SocketPathTest, AValueFromTheFileTheSystemRefusesIsNamedAtItsLine) {
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/cnp.yaml",
            absl::StrCat("workers: 1\nlisten:\n  - 127.0.0.1:0\n  - unix:", dir,
                         "/no/such/cnp.sock\n"),
            0644);
  auto socket = ServerProcess::Launch({.args = {"--config=" + dir + "/cnp.yaml"},
                                       .fresh_socket = false});
  ExpectRefused(*socket, absl::StrCat(dir, "/cnp.yaml:4:5: listen: unix:", dir,
                                      "/no/such/cnp.sock: cannot create the socket directory "));
  ExpectFileRefused(dir, absl::StrCat("access-log: ", dir, "/no/such/access.log\n"),
                    absl::StrCat(dir, "/cnp.yaml:1:13: access-log: cannot open ", dir,
                                 "/no/such/access.log: No such file or directory"));
}

// A unix --listen gRPC's clients read otherwise than as the file the server bound: a host in it
// (unix://localhost/PATH was bound as the relative path "localhost/PATH", a target gRPC refuses
// to connect to), or a percent sign (unix:/a%20b.sock was bound as "a%20b.sock", and gRPC
// connects to "a b.sock"). Each is refused before anything is bound (common/unix_target.h).
TEST(SocketPathTest, AUnixTargetGrpcReadsOtherwiseIsRefused) {
  const std::string dir = ShortTempDir();
  const std::string with_host = "unix://localhost" + dir + "/other.sock";
  auto hosted = Launch(dir, {"--workers=1", "--listen=" + with_host});
  ExpectRefused(*hosted, absl::StrCat("--listen: \"", with_host, "\": gRPC takes no host"));
  EXPECT_THAT(hosted->Log(), HasSubstr("write unix:/PATH (or unix:///PATH)"));

  const std::string encoded = "unix:" + dir + "/a%20b.sock";
  auto percent = Launch(dir, {"--workers=1", "--listen=" + encoded});
  ExpectRefused(*percent, absl::StrCat("--listen: \"", encoded, "\": gRPC would read its '%'"));
  struct stat st {};
  EXPECT_NE(::stat((dir + "/a%20b.sock").c_str(), &st), 0) << "a socket was bound";

  // unix:///PATH is the same socket as unix:PATH.
  auto triple = Launch(dir, {"--workers=1", "--listen=unix://" + dir + "/third.sock"});
  EXPECT_TRUE(triple->ready()) << triple->Log();
  EXPECT_EQ(::stat((dir + "/third.sock").c_str(), &st), 0) << triple->Log();
}

// A relative unix --listen is bound in the working directory, as given (the way to put a socket
// in a directory whose absolute path is too long for one), and the log says which directory:
// it said "listening on unix:rel.sock" alone.
TEST(SocketPathTest, ARelativeUnixPathIsBoundInTheWorkingDirectoryWhichTheLogNames) {
  const std::string dir = ShortTempDir();
  auto server = ServerProcess::Launch(
      {.args = {"--workers=1", "--listen=unix:rel.sock",
                "--python-path=" + Runfile("tests/functions/server")},
       .fresh_socket = false,
       .work_dir = dir});
  ASSERT_TRUE(server->ready()) << server->Log();
  struct stat st {};
  EXPECT_EQ(::stat((dir + "/rel.sock").c_str(), &st), 0) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr(absl::StrCat("listening on unix:rel.sock (in ", dir, ")")));
}

// An address named twice was bound twice, and the second bind failed after the workers had
// started, saying "another server already listens" about the server's own first listener.
TEST(SocketPathTest, AnAddressNamedTwiceIsRefusedBeforeListening) {
  const std::string dir = ShortTempDir();
  // Launch listens on unix:DIR/cnp.sock already; unix:///DIR/cnp.sock is the same file.
  auto unix_twice = Launch(dir, {"--workers=1", "--listen=unix://" + dir + "/cnp.sock"});
  ExpectRefused(*unix_twice, absl::StrCat("--listen=unix://", dir, "/cnp.sock is given twice (as ",
                                          "unix:", dir, "/cnp.sock); give each address once"));
  EXPECT_THAT(unix_twice->Log(), Not(HasSubstr("another server")));

  auto tcp_twice =
      Launch(dir, {"--workers=1", "--listen=127.0.0.1:1", "--listen=ipv4:127.0.0.1:1"});
  ExpectRefused(*tcp_twice, "--listen=ipv4:127.0.0.1:1 is given twice (as 127.0.0.1:1)");

  // Port 0 twice is two ports the kernel picks (found by a review).
  auto two_picked = Launch(ShortTempDir(), {"--workers=1", "--listen=127.0.0.1:0",
                                           "--listen=127.0.0.1:0"});
  EXPECT_TRUE(two_picked->ready()) << two_picked->Log();
}

// 8. --version printed absl's "cnp-server" and "Debug build (NDEBUG not #defined)"; cnp
// --version was an unknown command.
TEST(VersionTest, EveryProgramPrintsTheOneVersion) {
  for (const auto& [path, name] : std::vector<std::pair<std::string, std::string>>{
           {"service/cnp-server", "cnp-server"},
           {"adapter/cnp-adapter", "cnp-adapter"},
           {"client/cli/cnp", "cnp"}}) {
    ProcessResult run = RunWithInput({Runfile(path), "--version"}, "");
    EXPECT_EQ(run.exit_code, 0) << name << ": " << run.err;
    EXPECT_EQ(run.out, absl::StrCat(name, " ", kCnpVersion, "\n"));
    EXPECT_THAT(run.out + run.err, Not(HasSubstr("Debug build")));
  }
  // And --help lists it, as README says (cnp-server's and cnp-adapter's listed only their
  // absl flags; found by a review).
  for (const char* path : {"service/cnp-server", "adapter/cnp-adapter"}) {
    ProcessResult help = RunWithInput({Runfile(path), "--help"}, "");
    EXPECT_EQ(help.exit_code, 0) << path << ": " << help.err;
    EXPECT_THAT(help.out, HasSubstr("\n  --version\n      print the program's version and exit\n"))
        << path;
    EXPECT_THAT(help.out, HasSubstr("\n  --help, -h\n")) << path;
  }
  // A bad config file does not stand in the way of asking for the version.
  ProcessResult run =
      RunWithInput({Runfile("service/cnp-server"), "--config=/nonexistent", "--version"}, "");
  EXPECT_EQ(run.exit_code, 0) << run.err;
}

}  // namespace
}  // namespace cnp
