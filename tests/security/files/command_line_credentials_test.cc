// CouchDB credentials on cnp's command line. The review's findings:
// (a) `cnp derive|sync|upload http://admin:s3cretPW@127.0.0.1:PORT ...` left the password in
//     /proc/PID/cmdline, which every local user may read, for as long as the command ran (days,
//     for sync and derive). Now cnp blanks the URL's user info in its own argument area before
//     it does anything else, and warns once that it was visible until then.
// (b) `cnp sync --once http://admin:pw@192.0.2.2:15997 reg` sent `Authorization: Basic` in
//     plaintext to a host off loopback. Now that is refused before anything is sent, unless
//     --insecure, as the clients refuse to send the service's token.
// (c) `cnp derive --ca-file=FILE` took any file under 1 MiB as its CA certificates, where cnp
//     upload and sync refused one with no certificate. Now all of them read it one way
//     (client/couch, common/pem_file) and refuse alike, before anything is sent.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "client/cli/command_line_credentials.h"
#include "client/couch/couch_credentials.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"
#include "tests/support/spawn.h"

namespace cnp::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPassword[] = "s3cretPW";

// Somewhere cnp connects to first and that answers nothing: a CouchDB on loopback TCP and a
// cnp service on a unix socket. Whichever it reaches first, it has parsed its arguments by then.
class Listeners {
 public:
  explicit Listeners(const std::string& dir) {
    tcp_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof in;
    EXPECT_EQ(::bind(tcp_, reinterpret_cast<sockaddr*>(&in), sizeof in), 0);
    EXPECT_EQ(::listen(tcp_, 8), 0);
    ::getsockname(tcp_, reinterpret_cast<sockaddr*>(&in), &length);
    port_ = ntohs(in.sin_port);
    unix_path_ = dir + "/cnp.sock";
    unix_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::strncpy(un.sun_path, unix_path_.c_str(), sizeof un.sun_path - 1);
    EXPECT_EQ(::bind(unix_, reinterpret_cast<sockaddr*>(&un), sizeof un), 0);
    EXPECT_EQ(::listen(unix_, 8), 0);
  }
  ~Listeners() {
    for (int fd : accepted_) ::close(fd);
    ::close(tcp_);
    ::close(unix_);
  }

  int port() const { return port_; }
  std::string target() const { return "unix:" + unix_path_; }

  // Waits until cnp connects to either; false if it does not within `timeout_ms`.
  bool WaitForConnection(int timeout_ms) {
    pollfd fds[] = {{tcp_, POLLIN, 0}, {unix_, POLLIN, 0}};
    if (::poll(fds, 2, timeout_ms) <= 0) return false;
    for (const pollfd& p : fds) {
      if (p.revents & POLLIN) accepted_.push_back(::accept4(p.fd, nullptr, nullptr, SOCK_CLOEXEC));
    }
    return true;
  }

 private:
  int tcp_ = -1, unix_ = -1, port_ = 0;
  std::string unix_path_;
  std::vector<int> accepted_;
};

std::string CommandLine(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"), std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return absl::StrReplaceAll(text.str(), {{std::string(1, '\0'), " "}});
}

struct Seen {
  std::string command_line;  // while cnp was talking to the listener
  std::string err;
};

// Runs cnp with `args` (after "cnp"), reads its command line once it has connected, stops it.
Seen WhileConnected(Listeners& listeners, const std::string& dir, std::vector<std::string> args) {
  args.insert(args.begin(), Runfile("client/cli/cnp"));
  const std::string err_path = dir + "/err";
  const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  absl::StatusOr<pid_t> pid = Spawn({.argv = args,
                                     .env = {"CNP_COUCHDB_USER=", "NETRC=/nonexistent"},
                                     .fds = {{STDERR_FILENO, err}, {STDOUT_FILENO, -1}}});
  ::close(err);
  Seen seen;
  if (!pid.ok()) return seen;
  const bool connected = listeners.WaitForConnection(60'000);
  seen.command_line = CommandLine(*pid);
  ::kill(*pid, SIGKILL);
  WaitForExit(*pid);
  seen.err = ReadFile(err_path);
  EXPECT_TRUE(connected) << "cnp never connected: " << seen.err;
  return seen;
}

class CommandLinePasswordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ShortTempDir();
    listeners_ = std::make_unique<Listeners>(dir_);
    url_ = absl::StrCat("http://admin:", kPassword, "@127.0.0.1:", listeners_->port());
    WriteFile(dir_ + "/d.yml",
              "name: t\nhandlers:\n  t__map:\n    src: {type: map, version: 1, handler: m.f}\n",
              0644);
    WriteFile(dir_ + "/design.yml", "x:\n  views:\n    v: m.f\n", 0644);
  }

  void ExpectScrubbed(const Seen& seen) {
    EXPECT_THAT(seen.command_line, Not(HasSubstr(kPassword)));
    // The rest of the command line is as given, the user info blanked at its length.
    EXPECT_THAT(seen.command_line,
                HasSubstr(absl::StrCat("http://xxxxxxxxxxxxxx@127.0.0.1:", listeners_->port())));
    EXPECT_THAT(seen.err, AllOf(HasSubstr("can be read by every user of this host"),
                                HasSubstr("CNP_COUCHDB_USER and CNP_COUCHDB_PASSWORD"),
                                Not(HasSubstr(kPassword))));
  }

  std::string dir_, url_;
  std::unique_ptr<Listeners> listeners_;
};

TEST_F(CommandLinePasswordTest, SyncBlanksThePasswordInItsCommandLine) {
  ExpectScrubbed(WhileConnected(*listeners_, dir_, {"sync", "--once", url_, "reg"}));
}

TEST_F(CommandLinePasswordTest, DeriveBlanksThePasswordInItsCommandLine) {
  ExpectScrubbed(WhileConnected(*listeners_, dir_,
                                {"derive", "--once", "--target=" + listeners_->target(), url_,
                                 dir_ + "/d.yml"}));
}

TEST_F(CommandLinePasswordTest, UploadBlanksThePasswordInItsCommandLine) {
  ExpectScrubbed(WhileConnected(
      *listeners_, dir_,
      {"upload", "--target=" + listeners_->target(), url_, "db", dir_ + "/design.yml"}));
}

TEST(CommandLineCredentialsTest, TheUserInfoRunsToTheLastAtOfTheArgument) {
  const std::string arg = "--x=https://ad:p@ss/w?rd@couch:5984/db";
  cli::UserInfoSpan span = cli::FindUserInfo(arg);
  EXPECT_EQ(arg.substr(span.offset, span.length), "ad:p@ss/w?rd");
  EXPECT_EQ(cli::FindUserInfo("http://couch:5984").length, 0u);
  EXPECT_EQ(cli::FindUserInfo("admin@example.com").length, 0u);
  EXPECT_EQ(cli::FindUserInfo("a@b://c").length, 0u);
}

// (b) Refused before anything is sent: the message names the fix.
TEST(PlaintextCredentialsTest, CredentialsForAnHttpCouchDbOffLoopbackAreRefused) {
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/design.yml", "x:\n  views:\n    v: m.f\n", 0644);
  WriteFile(dir + "/d.yml",
            "name: t\nhandlers:\n  t__map:\n    src: {type: map, version: 1, handler: m.f}\n",
            0644);
  const std::string remote = "http://admin:pw@192.0.2.2:15997";
  const std::string cnp = Runfile("client/cli/cnp");
  for (const std::vector<std::string>& command : std::vector<std::vector<std::string>>{
           {cnp, "sync", "--once", remote, "reg"},
           {cnp, "upload", "--register=reg", "--remove", remote, "x"},
           {cnp, "upload", "--target=unix:" + dir + "/none.sock", remote, "db",
            dir + "/design.yml"},
           {cnp, "derive", "--once", "--target=unix:" + dir + "/none.sock", remote,
            dir + "/d.yml"}}) {
    SCOPED_TRACE(command[1]);
    ProcessResult run = RunWithInput(command, "");
    EXPECT_NE(run.exit_code, 0);
    EXPECT_THAT(run.err, AllOf(HasSubstr("refusing to send CouchDB's user and password"),
                               HasSubstr("http://192.0.2.2:15997 in plaintext"),
                               HasSubstr("use https://, or pass --insecure")));
  }
}

// Every command that reaches CouchDB refuses the same --ca-file with the same message and exit
// status, before anything is sent (before, cnp derive took any file under 1 MiB as its CA
// certificates and failed later, at the TLS handshake), and none shows the URL's password in it.
TEST(CaFileTest, EveryCouchDbCommandRefusesABadCaFileAlike) {
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/design.yml", "x:\n  views:\n    v: m.f\n", 0644);
  WriteFile(dir + "/d.yml",
            "name: t\nhandlers:\n  t__map:\n    src: {type: map, version: 1, handler: m.f}\n",
            0644);
  WriteFile(dir + "/ca.txt", "not a certificate\n", 0644);
  const std::string couch = "https://admin:pw-ca-file-test@localhost:6984";
  const std::string cnp = Runfile("client/cli/cnp");
  struct BadCaFile {
    std::string path;
    std::string message;
  };
  for (const BadCaFile& bad : std::vector<BadCaFile>{
           {dir + "/ca.txt",
            dir + "/ca.txt holds no PEM certificate (-----BEGIN CERTIFICATE-----)"},
           {dir + "/none.pem", "cannot read " + dir + "/none.pem: No such file or directory"}}) {
    SCOPED_TRACE(bad.path);
    const std::string ca = "--ca-file=" + bad.path;
    for (const std::vector<std::string>& command : std::vector<std::vector<std::string>>{
             {cnp, "sync", "--once", ca, couch, "reg"},
             {cnp, "upload", "--register=reg", "--remove", ca, couch, "x"},
             {cnp, "upload", "--target=unix:" + dir + "/none.sock", ca, couch, "db",
              dir + "/design.yml"},
             {cnp, "derive", "--once", "--target=unix:" + dir + "/none.sock", ca, couch,
              dir + "/d.yml"}}) {
      SCOPED_TRACE(absl::StrCat(command[1], " ", command[2]));
      ProcessResult run = RunWithInput(command, "");
      EXPECT_EQ(run.exit_code, 2) << run.err;
      EXPECT_THAT(run.err, HasSubstr(absl::StrCat(": --ca-file: ", bad.message, "\n")));
      EXPECT_THAT(run.err, Not(HasSubstr("pw-ca-file-test")));
    }
  }
}

TEST(PlaintextCredentialsTest, LoopbackHttpsNoCredentialsOrInsecurePass) {
  using client::couch::CheckCredentialsStayPrivate;
  using client::couch::CouchCredentials;
  auto with = [](std::string url, std::string user) {
    return CouchCredentials{.url = std::move(url), .username = std::move(user),
                            .password = "pw", .source = "the URL"};
  };
  for (const char* url : {"http://127.0.0.1:5984", "http://localhost:5984", "http://[::1]:5984",
                          "http://127.1.2.3", "https://couch.example.com:6984"}) {
    EXPECT_TRUE(CheckCredentialsStayPrivate(with(url, "admin"), false).ok()) << url;
  }
  for (const char* url : {"http://192.0.2.2:15997", "http://127.0.0.1.evil.com:5984",
                          "http://localhost.:5984", "http://[::ffff:10.0.0.1]:5984"}) {
    EXPECT_TRUE(absl::IsPermissionDenied(
        CheckCredentialsStayPrivate(with(url, "admin"), false)))
        << url;
    EXPECT_TRUE(CheckCredentialsStayPrivate(with(url, "admin"), true).ok()) << url;
    EXPECT_TRUE(CheckCredentialsStayPrivate(with(url, ""), false).ok()) << url;
  }
}

}  // namespace
}  // namespace cnp::testing
