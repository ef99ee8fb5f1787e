// The direct-session listener with a stand-in worker (fake_worker.py): an adapter that connects
// and then stalls in the middle of its hello costs only its own connection, never the control
// loop the listener shares with the worker pool, signals and every other session's start; and
// its socket file follows the gRPC socket's rules: a live server's socket is never removed, at
// start or at stop.
#include "service/session/session_listener.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <grp.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/common/framing.h"
#include "service/session/session_worker_pool.h"
#include "session.pb.h"
#include "tests/support/files.h"

namespace cnp::session {
namespace {

// A client end of the direct-session socket, as cnp-adapter opens it.
int Connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends the first bytes of a hello frame that announces 100 bytes of payload, with `pipes`
// attached as the adapter attaches CouchDB's, and never the rest.
void SendHalfAHello(int fd, const std::vector<int>& pipes) {
  const char bytes[] = {100, 0, 0, 0, 0x0a, 0x05};  // the length, then the settings field begun
  iovec iov{const_cast<char*>(bytes), sizeof bytes};
  union {
    char buffer[CMSG_SPACE(2 * sizeof(int))];
    cmsghdr align;
  } control{};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control.buffer;
  message.msg_controllen = CMSG_SPACE(pipes.size() * sizeof(int));
  cmsghdr* rights = CMSG_FIRSTHDR(&message);
  rights->cmsg_level = SOL_SOCKET;
  rights->cmsg_type = SCM_RIGHTS;
  rights->cmsg_len = CMSG_LEN(pipes.size() * sizeof(int));
  std::memcpy(CMSG_DATA(rights), pipes.data(), pipes.size() * sizeof(int));
  ASSERT_EQ(::sendmsg(fd, &message, 0), static_cast<ssize_t>(sizeof bytes)) << std::strerror(errno);
}

// True once `fd` reads end of file, within `bound`.
bool ReadsEndOfFile(int fd, absl::Duration bound) {
  pollfd ready{fd, POLLIN, 0};
  if (::poll(&ready, 1, static_cast<int>(absl::ToInt64Milliseconds(bound))) != 1) return false;
  char byte;
  return ::read(fd, &byte, 1) == 0;
}

class SessionListenerTest : public ::testing::Test {
 protected:
  SessionListenerTest() : work_(asio::make_work_guard(io_)) {
    SessionPoolOptions pool_options;
    pool_options.command = {"/usr/bin/python3.11", {"tests/support/fake_worker.py"}};
    pool_options.max_sessions = 4;
    pool_options.spare_workers = 1;
    pool_ = std::make_unique<SessionWorkerPool>(std::move(pool_options), io_);
    path_ = testing::ShortTempDir() + "/cnp.sock.direct";
  }

  // Listens on path_, giving each adapter `hello_timeout` to send its hello, with the control
  // loop run by a thread of its own.
  void StartListening(absl::Duration hello_timeout = ListenerOptions().hello_timeout,
                      ListenerOptions options = {}) {
    options.paths = {path_};
    options.hello_timeout = hello_timeout;
    listener_ = std::make_unique<SessionListener>(std::move(options), *pool_, io_);
    const absl::Status started = listener_->Start();
    ASSERT_TRUE(started.ok()) << started;
    pool_->Start();
    loop_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    // Only with the loop running: a Start() that failed its assertion left none to stop it on.
    if (listener_ != nullptr && loop_.joinable()) listener_->Stop();
    pool_->Shutdown();
    work_.reset();
    io_.stop();
    if (loop_.joinable()) loop_.join();
  }

  // Whether the control loop runs a handler posted to it now, within `bound`.
  bool LoopRunsWithin(absl::Duration bound) {
    auto ran = std::make_shared<std::promise<void>>();
    std::future<void> result = ran->get_future();
    asio::post(io_, [ran] { ran->set_value(); });
    return result.wait_for(absl::ToChronoNanoseconds(bound)) == std::future_status::ready;
  }

  // Two adapters of our own uid connect, send the start of a hello with their pipes (both
  // ends of one pipe, whose read end is returned in `couchdb_read`), and stall.
  std::vector<int> TwoStalledAdapters(int& couchdb_read) {
    int couchdb_pipe[2];
    EXPECT_EQ(::pipe2(couchdb_pipe, O_CLOEXEC), 0);
    std::vector<int> stalled;
    for (int i = 0; i < 2; ++i) {
      const int fd = Connect(path_);
      EXPECT_GE(fd, 0) << std::strerror(errno);
      if (fd < 0) continue;
      SendHalfAHello(fd, {couchdb_pipe[0], couchdb_pipe[1]});
      stalled.push_back(fd);
    }
    ::close(couchdb_pipe[1]);  // from now on only the server's copies keep the pipe open
    couchdb_read = couchdb_pipe[0];
    return stalled;
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::unique_ptr<SessionWorkerPool> pool_;
  std::unique_ptr<SessionListener> listener_;
  std::string path_;
  std::thread loop_;
};

// Before, the listener read the hello with a blocking read bounded at 2 s: two stalling adapters
// held the loop about 4 s, its timers fired that late and the other adapter waited as long.
// Here the stalled adapters have an hour to finish their hellos: a listener that blocked the
// loop on one could answer nothing else within the test's 20 s bounds, and no bound below is a
// measure of speed.
TEST_F(SessionListenerTest, AStallingAdapterCostsOnlyItsOwnConnection) {
  StartListening(absl::Hours(1));
  int couchdb_read = -1;
  const std::vector<int> stalled = TwoStalledAdapters(couchdb_read);
  // Closed however the test ends: a loop blocked on one of them then reads its end, and
  // TearDown can stop it.
  absl::Cleanup close_stalled = [&] {
    for (int fd : stalled) ::close(fd);
    ::close(couchdb_read);
  };
  ASSERT_EQ(stalled.size(), 2u);

  // A third adapter starts a session meanwhile.
  int pipes[2];
  ASSERT_EQ(::pipe2(pipes, O_CLOEXEC), 0);
  const int adapter = Connect(path_);
  ASSERT_GE(adapter, 0) << std::strerror(errno);
  v1::Hello hello;
  hello.set_adapter_pid(::getpid());
  ASSERT_TRUE(WriteFrameWithDescriptors(adapter, hello.SerializeAsString(), {pipes[0], pipes[1]},
                                        absl::Now() + absl::Seconds(5))
                  .ok());
  std::string payload;
  ASSERT_TRUE(ReadFrame(adapter, payload, absl::Now() + absl::Seconds(20)).ok())
      << "the session waited for the stalled adapters";
  v1::Answer answer;
  ASSERT_TRUE(answer.ParseFromString(payload));
  EXPECT_EQ(answer.outcome(), v1::Answer::ACCEPTED) << answer.ShortDebugString();
  EXPECT_TRUE(LoopRunsWithin(absl::Seconds(20))) << "the loop was held by the stalled adapters";

  // All the while the stalled connections were still waited for: not one was dropped early.
  for (int fd : stalled) {
    pollfd ready{fd, POLLIN, 0};
    EXPECT_EQ(::poll(&ready, 1, 0), 0) << "a stalled connection was answered or closed";
  }
  ::close(adapter);
  ::close(pipes[0]);
  ::close(pipes[1]);
}

// An adapter of ours: connected to the listener, it has sent a hello with both ends of a pipe
// as CouchDB's pipes. Closes all three with it.
struct HelloSent {
  HelloSent() = default;
  HelloSent(const HelloSent&) = delete;
  HelloSent& operator=(const HelloSent&) = delete;
  ~HelloSent() {
    for (int fd : {pipes[0], pipes[1], adapter}) {
      if (fd >= 0) ::close(fd);
    }
  }
  int pipes[2] = {-1, -1};
  int adapter = -1;
};

void SendHello(const std::string& path, const v1::Hello& hello, absl::Time by, HelloSent& sent) {
  ASSERT_EQ(::pipe2(sent.pipes, O_CLOEXEC), 0);
  sent.adapter = Connect(path);
  ASSERT_GE(sent.adapter, 0) << std::strerror(errno);
  ASSERT_TRUE(WriteFrameWithDescriptors(sent.adapter, hello.SerializeAsString(),
                                        {sent.pipes[0], sent.pipes[1]}, by)
                  .ok());
}

// An adapter of ours hands the server a pair of pipes; `ended` is what the server tells it when
// the session is over.
void RunASession(const std::string& path, v1::Ended& ended) {
  HelloSent sent;
  v1::Hello hello;
  hello.set_adapter_pid(::getpid());
  ASSERT_NO_FATAL_FAILURE(SendHello(path, hello, absl::Now() + absl::Seconds(5), sent));
  std::string payload;
  ASSERT_TRUE(ReadFrame(sent.adapter, payload, absl::Now() + absl::Seconds(20)).ok());
  v1::Answer answer;
  ASSERT_TRUE(answer.ParseFromString(payload));
  ASSERT_EQ(answer.outcome(), v1::Answer::ACCEPTED) << answer.ShortDebugString();
  ASSERT_TRUE(ReadFrame(sent.adapter, payload, absl::Now() + absl::Seconds(20)).ok());
  ASSERT_TRUE(ended.ParseFromString(payload));
}

// A worker that refuses the session before touching the pipes (a Failure BAD_INPUT): the
// adapter may still serve CouchDB over the Session stream.
TEST_F(SessionListenerTest, ASessionTheWorkerRefusedLeavesThePipesToTheAdapter) {
  SessionPoolOptions pool_options;
  pool_options.command = {"/usr/bin/python3.11",
                          {"tests/support/fake_worker.py", "--refuse-sessions"}};
  pool_options.max_sessions = 4;
  pool_options.spare_workers = 1;
  pool_ = std::make_unique<SessionWorkerPool>(std::move(pool_options), io_);
  StartListening();
  v1::Ended ended;
  ASSERT_NO_FATAL_FAILURE(RunASession(path_, ended));
  EXPECT_TRUE(ended.pipes_untouched()) << ended.ShortDebugString();
  EXPECT_THAT(ended.message(), ::testing::HasSubstr("serves no direct session"));
}

// Any other reply but a session's end may come after the worker read from CouchDB's pipe (a
// worker out of memory mid-line answered a plain failure before): the adapter must not read
// CouchDB's input on from wherever the worker stopped.
TEST_F(SessionListenerTest, ASessionAnsweredWithoutItsEndLeavesNothingToTheAdapter) {
  StartListening();  // the stand-in answers every task with a Resolve
  v1::Ended ended;
  ASSERT_NO_FATAL_FAILURE(RunASession(path_, ended));
  EXPECT_FALSE(ended.pipes_untouched()) << ended.ShortDebugString();
  EXPECT_EQ(ended.exit_code(), 1);
  EXPECT_THAT(ended.message(), ::testing::HasSubstr("without its end"));
}

// CouchDB starting many query servers at once on a busy machine: with no worker ready, an
// adapter was left waiting past its own 4.5 s, gave up on CouchDB's pipes and exited, and the
// request failed. The server now answers within the wait the adapter says it gives
// (Hello.answer_within_ms), so that the adapter serves CouchDB over the Session stream.
TEST_F(SessionListenerTest, AnAdapterIsAnsweredWithinItsWaitWhenNoWorkerIsReady) {
  const std::string hold = testing::ShortTempDir() + "/hold";
  const int made = ::open(hold.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(made, 0);
  ::close(made);
  absl::Cleanup release = [&] { ::unlink(hold.c_str()); };  // the held starts then fail
  SessionPoolOptions pool_options;
  // A worker start that does not end while `hold` exists: an interpreter starting on a
  // machine too busy to finish it in time.
  pool_options.command = {"/usr/bin/python3.11",
                          {"-c", absl::StrCat("import os, time\nwhile os.path.exists('", hold,
                                              "'):\n    time.sleep(0.01)\n")}};
  pool_options.max_sessions = 4;
  pool_options.spare_workers = 1;
  pool_options.max_parallel_starts = 1;
  pool_ = std::make_unique<SessionWorkerPool>(std::move(pool_options), io_);
  StartListening();

  HelloSent adapter;
  v1::Hello hello;
  hello.set_adapter_pid(::getpid());
  hello.set_answer_within_ms(1000);
  const absl::Time sent = absl::Now();
  ASSERT_NO_FATAL_FAILURE(SendHello(path_, hello, sent + absl::Seconds(5), adapter));
  std::string payload;
  ASSERT_TRUE(ReadFrame(adapter.adapter, payload, sent + absl::Seconds(10)).ok())
      << "no answer while no worker was ready";
  EXPECT_LT(absl::Now() - sent, absl::Seconds(1)) << "answered after the adapter gave up";
  v1::Answer answer;
  ASSERT_TRUE(answer.ParseFromString(payload));
  EXPECT_EQ(answer.outcome(), v1::Answer::UNAVAILABLE) << answer.ShortDebugString();
  EXPECT_THAT(answer.reason(), ::testing::HasSubstr("no session worker was ready in time"));
}

// A child process that connects to `path` as nobody (uid and gid 65534) and reads until the
// server closes: exits 0 if it was answered (a refusal), 1 if not, 2 if it could not connect.
pid_t ConnectAsNobody(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) ::_exit(2);
  char buffer[4096];
  ssize_t total = 0;
  for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) total += n;
  ::_exit(total > 0 ? 0 : 1);
}

int ExitCodeOf(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A user who may not connect is refused each time, but logged once per interval (10 s), as on
// the gRPC socket: before, each refused connection wrote a WARN line to the server's log, so
// such a user could grow it as fast as it could connect (2,000 connections, 2,000 lines).
TEST_F(SessionListenerTest, RefusedConnectionsOfOneUserAreLoggedOncePerInterval) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another user";
  const std::string dir = path_.substr(0, path_.rfind('/'));
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);  // nobody may reach the socket (group 65534, 0660)
  ListenerOptions options;
  options.socket_gid = 65534;
  options.access_log = dir + "/access.log";
  ASSERT_NO_FATAL_FAILURE(StartListening(ListenerOptions().hello_timeout, std::move(options)));
  constexpr int kRefused = 20;
  for (int i = 0; i < kRefused; ++i) {
    ASSERT_EQ(ExitCodeOf(ConnectAsNobody(path_)), 0) << "connection " << i << " was not answered";
  }
  const std::string log = testing::ReadFile(dir + "/access.log");
  const std::string line = "refused peer=unix:" + path_;
  size_t lines = 0;
  for (size_t at = log.find(line); at != std::string::npos; at = log.find(line, at + 1)) ++lines;
  // The first refusal at once; the rest are counted into the next line, 10 s on.
  EXPECT_EQ(lines, 1u) << log;
  EXPECT_NE(log.find("peer_uid=65534"), std::string::npos) << log;
  EXPECT_NE(log.find(" peer_pid="), std::string::npos) << log;
  EXPECT_NE(log.find("uid not allowed"), std::string::npos) << log;
  EXPECT_NE(log.find("connections=1"), std::string::npos) << log;
}

// Each stalled connection is dropped once its own time to send a hello (the server's, 2 s) is
// over, and the pipes it sent are closed with it.
TEST_F(SessionListenerTest, AStalledAdapterIsDroppedWithThePipesItSent) {
  StartListening();
  int couchdb_read = -1;
  const std::vector<int> stalled = TwoStalledAdapters(couchdb_read);
  ASSERT_EQ(stalled.size(), 2u);
  for (int fd : stalled) {
    EXPECT_TRUE(ReadsEndOfFile(fd, absl::Seconds(20))) << "the stalled connection stayed open";
    ::close(fd);
  }
  EXPECT_TRUE(ReadsEndOfFile(couchdb_read, absl::Seconds(20)))
      << "the stalled adapters' pipes stayed open in the server";
  ::close(couchdb_read);
}

// Where another server's socket sits at the path: it listens, but its backlog of connections
// waiting to be accepted is full (a server busy for a moment). Before, the listener probed it
// with a blocking connect, which waits for room in that backlog (for ever, or until it fails),
// and removed the file on any failure: a live server's socket was deleted.
TEST(SessionListenerPathTest, ALiveServerWithAFullBacklogKeepsItsSocket) {
  const std::string path = testing::ShortTempDir() + "/cnp.sock.direct";
  const int live = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  ASSERT_EQ(::bind(live, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(live, 0), 0);
  struct stat before {};
  ASSERT_EQ(::stat(path.c_str(), &before), 0);
  // Connect without blocking until the backlog takes no more.
  std::vector<int> waiting;
  for (int i = 0; i < 64; ++i) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    waiting.push_back(fd);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
      break;
    }
  }
  ASSERT_LT(waiting.size(), 64u) << "the backlog never filled";

  asio::io_context io;
  SessionPoolOptions pool_options;
  pool_options.command = {"/usr/bin/python3.11", {"tests/support/fake_worker.py"}};
  pool_options.max_sessions = 1;
  SessionWorkerPool pool(std::move(pool_options), io);
  ListenerOptions options;
  options.paths = {path};
  SessionListener listener(std::move(options), pool, io);
  std::future<absl::Status> started =
      std::async(std::launch::async, [&listener] { return listener.Start(); });
  const bool returned = started.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  EXPECT_TRUE(returned) << "Start() waited on the live server's full backlog";
  struct stat after {};
  EXPECT_EQ(::stat(path.c_str(), &after), 0) << "the live server's socket was removed";
  EXPECT_EQ(after.st_ino, before.st_ino) << "the live server's socket was replaced";
  // The live server goes: a Start() still waiting then returns.
  ::close(live);
  const absl::Status status = started.get();
  EXPECT_TRUE(absl::IsAlreadyExists(status)) << status;
  EXPECT_NE(status.message().find("another server already listens on " + path),
            absl::string_view::npos)
      << status.message();
  for (int fd : waiting) ::close(fd);
}

// The listener's socket file was removed (an operator, a cleaning script) and another server
// has put its own at the path since: stopping must leave that one alone. Before, Stop()
// unlinked the path whatever it held.
TEST_F(SessionListenerTest, StopLeavesASocketAnotherServerPutAtThePath) {
  StartListening();
  ASSERT_EQ(::unlink(path_.c_str()), 0);
  const int other = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path_.c_str(), sizeof address.sun_path - 1);
  ASSERT_EQ(::bind(other, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(other, 8), 0);
  struct stat before {};
  ASSERT_EQ(::stat(path_.c_str(), &before), 0);

  listener_->Stop();
  struct stat after {};
  EXPECT_EQ(::stat(path_.c_str(), &after), 0) << "the other server's socket was removed";
  EXPECT_EQ(after.st_ino, before.st_ino);
  ::close(other);
}

// And the file it bound itself, still there, it does remove.
TEST_F(SessionListenerTest, StopRemovesItsOwnSocketFile) {
  StartListening();
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  listener_->Stop();
  EXPECT_NE(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(errno, ENOENT);
}

// A path too long for a unix socket address is an error from Start(), never an exception:
// asio's endpoint throws std::system_error ("File name too long"), which once ended cnp-server
// with std::terminate after it had started listening.
TEST(SessionListenerPathTest, APathTooLongForASocketIsAnErrorNotAnException) {
  asio::io_context io;
  SessionPoolOptions pool_options;
  pool_options.command = {"/usr/bin/python3.11", {"tests/support/fake_worker.py"}};
  pool_options.max_sessions = 1;
  SessionWorkerPool pool(std::move(pool_options), io);
  const std::string path = testing::ShortTempDir() + "/" + std::string(110, 'p') + ".direct";
  ListenerOptions options;
  options.paths = {path};
  SessionListener listener(std::move(options), pool, io);
  absl::Status started = absl::OkStatus();
  EXPECT_NO_THROW(started = listener.Start());
  EXPECT_FALSE(started.ok());
  EXPECT_NE(started.message().find(path), absl::string_view::npos) << started.message();
  EXPECT_NE(started.message().find("must be 1 to 107 bytes long"), absl::string_view::npos)
      << started.message();
}


// Sends `bytes` in one sendmsg() with `fds` attached (none: an ordinary send).
void SendWithDescriptors(int fd, const std::string& bytes, const std::vector<int>& fds) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  union {
    char buffer[CMSG_SPACE(4 * sizeof(int))];
    cmsghdr align;
  } control{};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  if (!fds.empty()) {
    message.msg_control = control.buffer;
    message.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
    cmsghdr* rights = CMSG_FIRSTHDR(&message);
    rights->cmsg_level = SOL_SOCKET;
    rights->cmsg_type = SCM_RIGHTS;
    rights->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(rights), fds.data(), fds.size() * sizeof(int));
  }
  ASSERT_EQ(::sendmsg(fd, &message, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()))
      << std::strerror(errno);
}

// Whether the server closes `fd` within `bound`, whatever it answered first.
bool ClosedWithin(int fd, absl::Duration bound) {
  const absl::Time give_up = absl::Now() + bound;
  for (;;) {
    const absl::Duration left = give_up - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    pollfd ready{fd, POLLIN, 0};
    if (::poll(&ready, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) != 1) continue;
    char buffer[4096];
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n <= 0) return true;  // end of file, or reset
  }
}

size_t Count(const std::string& text, const std::string& what) {
  size_t count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++count;
  return count;
}

// Before, any 4-byte header up to 1 MiB was believed and the buffer sized to it at once: 500
// connections announcing 1 MiB and sending nothing more took 500 MiB. A real hello is a few
// hundred bytes; one announced past the cap is dropped at once, not after the hello's timeout.
TEST_F(SessionListenerTest, AHelloLongerThanARealOneIsDroppedAtOnce) {
  StartListening(absl::Hours(1));
  const int adapter = Connect(path_);
  ASSERT_GE(adapter, 0) << std::strerror(errno);
  absl::Cleanup close_adapter = [&] { ::close(adapter); };
  char header[kFrameHeaderBytes];
  EncodeFrameLength((1u << 20) - 1, header);
  SendWithDescriptors(adapter, std::string(header, sizeof header), {});
  EXPECT_TRUE(ClosedWithin(adapter, absl::Seconds(10))) << "a 1 MiB hello was waited for";
}

// Adapters that connect and stall before their hello is whole hold a connection each (and the
// descriptors they sent with it) until their hello's timeout: only so many may at once. Those
// past the cap are told AT_CAPACITY at once (a real adapter then uses the Session stream) and
// closed; the ones within it are still waited for.
TEST_F(SessionListenerTest, AdaptersStillSendingTheirHellosAreCapped) {
  StartListening(absl::Hours(1));
  constexpr int kCap = 64;  // kMaxPendingHellos
  std::vector<int> stalled;
  absl::Cleanup close_stalled = [&] {
    for (int fd : stalled) ::close(fd);
  };
  for (int i = 0; i < kCap; ++i) {
    const int fd = Connect(path_);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    stalled.push_back(fd);
    SendWithDescriptors(fd, std::string(1, '\x64'), {});  // a header begun, never finished
  }
  // No wait is needed for them to be counted: the listener counts a connection as it accepts
  // it, and accepts in the order the connections were made (the kernel's accept queue is
  // first in, first out), so every one of the kCap is counted before any of the extras below
  // is accepted, however slow the loop. The loop still answers meanwhile.
  ASSERT_TRUE(LoopRunsWithin(absl::Seconds(20)));
  for (int i = 0; i < 4; ++i) {
    const int extra = Connect(path_);
    ASSERT_GE(extra, 0) << std::strerror(errno);
    absl::Cleanup close_extra = [&] { ::close(extra); };
    std::string payload;
    ASSERT_TRUE(ReadFrame(extra, payload, absl::Now() + absl::Seconds(10)).ok())
        << "a connection past the cap was not answered";
    v1::Answer answer;
    ASSERT_TRUE(answer.ParseFromString(payload));
    EXPECT_EQ(answer.outcome(), v1::Answer::AT_CAPACITY) << answer.ShortDebugString();
    EXPECT_EQ(answer.server_pid(), 0) << "a peer not yet checked learnt the server's pid";
    EXPECT_TRUE(ClosedWithin(extra, absl::Seconds(10)));
  }
  for (int fd : stalled) {
    pollfd ready{fd, POLLIN, 0};
    EXPECT_EQ(::poll(&ready, 1, 0), 0) << "a stalled connection within the cap was dropped";
  }
}

// A hello carries CouchDB's two pipes. Before, each recvmsg() of the header took up to four
// descriptors, one byte at a time: sixteen planted per connection, kept until the hello's
// timeout, and 200 connections a tenth of a second took the server to its open-files limit.
// Now a third descriptor drops the connection at once (closing what it sent), and the drops
// of one user are one access-log line per interval, not a WARN line each.
TEST_F(SessionListenerTest, AHelloWithMoreThanTwoDescriptorsIsDroppedAndLoggedOncePerInterval) {
  const std::string dir = path_.substr(0, path_.rfind('/'));
  ListenerOptions options;
  options.access_log = dir + "/access.log";
  ASSERT_NO_FATAL_FAILURE(StartListening(absl::Hours(1), std::move(options)));
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 10; ++i) {
    int planted[2];
    ASSERT_EQ(::pipe2(planted, O_CLOEXEC), 0);
    const int adapter = Connect(path_);
    ASSERT_GE(adapter, 0) << std::strerror(errno);
    SendWithDescriptors(adapter, std::string(1, '\x64'), {planted[0], planted[1]});
    SendWithDescriptors(adapter, std::string(1, '\0'), {planted[0], planted[1]});
    ::close(planted[1]);  // only the server's copies keep the pipe open now
    EXPECT_TRUE(ClosedWithin(adapter, absl::Seconds(10)))
        << "a hello with four descriptors was waited for";
    EXPECT_TRUE(ReadsEndOfFile(planted[0], absl::Seconds(10)))
        << "the descriptors it planted stayed open in the server";
    ::close(planted[0]);
    ::close(adapter);
  }
  const std::string log = testing::ReadFile(dir + "/access.log");
  EXPECT_EQ(Count(log, "closed peer=unix:" + path_), 1u) << log;
  EXPECT_THAT(log, ::testing::HasSubstr("more than the 2 descriptors a hello carries")) << log;
  const std::string stderr_text = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(stderr_text, ::testing::Not(::testing::HasSubstr("dropped"))) << stderr_text;
}

// The direct socket's connections are capped below the open-files limit as the gRPC
// listener's are (service/listen/descriptor_cap.h): before, there was no cap, and a flood of
// them starved the gRPC calls and the workers of descriptors.
TEST_F(SessionListenerTest, ConnectionsPastTheDescriptorCapAreClosedAtOnce) {
  const std::string dir = path_.substr(0, path_.rfind('/'));
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &before), 0);
  const int lowest_free = ::dup(0);
  ASSERT_GE(lowest_free, 0);
  ::close(lowest_free);
  // descriptor_cap.h keeps 64 below the limit: connections numbered past lowest_free + 40 are
  // closed.
  rlimit lowered = before;
  lowered.rlim_cur = lowest_free + 40 + 64;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0) << std::strerror(errno);
  absl::Cleanup restore = [&] { ::setrlimit(RLIMIT_NOFILE, &before); };
  ListenerOptions options;
  options.access_log = dir + "/access.log";
  ASSERT_NO_FATAL_FAILURE(StartListening(absl::Hours(1), std::move(options)));
  std::vector<int> clients;
  absl::Cleanup close_clients = [&] {
    for (int fd : clients) ::close(fd);
  };
  bool one_closed = false;
  for (int i = 0; i < 30 && !one_closed; ++i) {
    const int fd = Connect(path_);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    clients.push_back(fd);
    one_closed = ClosedWithin(fd, absl::Milliseconds(500));
  }
  EXPECT_TRUE(one_closed) << "no connection was closed at the descriptor cap";
  EXPECT_THAT(testing::ReadFile(dir + "/access.log"),
              ::testing::HasSubstr("too many open connections (descriptor cap"));
}

// A hello frame of `hello`, whole, with both ends of a fresh pipe.
void SendHello(int fd, const v1::Hello& hello) {
  int pipes[2];
  ASSERT_EQ(::pipe2(pipes, O_CLOEXEC), 0);
  ASSERT_TRUE(WriteFrameWithDescriptors(fd, hello.SerializeAsString(), {pipes[0], pipes[1]},
                                        absl::Now() + absl::Seconds(5))
                  .ok());
  ::close(pipes[0]);
  ::close(pipes[1]);
}

// An adapter-started server is told other settings by each adapter configured otherwise.
// Before, every distinct settings line was kept for good (up to 1 MiB each: 300 hellos, 300 MB
// never freed) and each wrote a WARN line of 16 KiB. Now only a short digest of a few is kept,
// the line says a bounded prefix, and such lines come once per interval.
TEST_F(SessionListenerTest, OtherSettingsAreReportedBoundedly) {
  ListenerOptions options;
  options.adapter_settings = "python-path=/srv/views allow-module= workers=default";
  ASSERT_NO_FATAL_FAILURE(StartListening(ListenerOptions().hello_timeout, std::move(options)));
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 30; ++i) {
    const int adapter = Connect(path_);
    ASSERT_GE(adapter, 0) << std::strerror(errno);
    absl::Cleanup close_adapter = [&] { ::close(adapter); };
    v1::Hello hello;
    hello.set_adapter_pid(::getpid());
    hello.set_settings(absl::StrCat("python-path=/srv/", i, "/", std::string(8000, 'p'),
                                    " allow-module= workers=default"));
    SendHello(adapter, hello);
    std::string payload;
    ASSERT_TRUE(ReadFrame(adapter, payload, absl::Now() + absl::Seconds(10)).ok());
    v1::Answer answer;
    ASSERT_TRUE(answer.ParseFromString(payload));
    EXPECT_EQ(answer.outcome(), v1::Answer::SETTINGS_DIFFER) << answer.ShortDebugString();
  }
  ASSERT_TRUE(LoopRunsWithin(absl::Seconds(20)));
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_LE(Count(log, "wants other settings"), 2u) << log.substr(0, 4000);
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    EXPECT_LT(line.size(), 1024u) << line.substr(0, 300);
  }
}

// A peer whose uid may not use the server is refused, and told nothing else: before, its
// REFUSED answer carried the server's pid and the settings an adapter launched it with (its
// --python-path and --allow-module).
TEST_F(SessionListenerTest, ARefusedPeerLearnsNothingOfTheServer) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another user";
  const std::string dir = path_.substr(0, path_.rfind('/'));
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  ListenerOptions options;
  options.socket_gid = 65534;
  options.access_log = dir + "/access.log";
  options.adapter_settings = "python-path=/srv/secret allow-module=payroll workers=default";
  ASSERT_NO_FATAL_FAILURE(StartListening(ListenerOptions().hello_timeout, std::move(options)));
  int answer_pipe[2];
  ASSERT_EQ(::pipe(answer_pipe), 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path_.c_str(), sizeof address.sun_path - 1);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(answer_pipe[0]);
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) ::_exit(2);
    char buffer[4096];
    for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) {
      if (::write(answer_pipe[1], buffer, n) != n) ::_exit(4);
    }
    ::_exit(0);
  }
  ::close(answer_pipe[1]);
  std::string payload;
  const absl::Status read = ReadFrame(answer_pipe[0], payload, absl::Now() + absl::Seconds(20));
  ::close(answer_pipe[0]);
  EXPECT_EQ(ExitCodeOf(child), 0);
  ASSERT_TRUE(read.ok()) << read;
  v1::Answer answer;
  ASSERT_TRUE(answer.ParseFromString(payload));
  EXPECT_EQ(answer.outcome(), v1::Answer::REFUSED);
  EXPECT_EQ(answer.server_pid(), 0);
  EXPECT_FALSE(answer.started_by_adapter());
  EXPECT_EQ(answer.settings(), "");
  EXPECT_THAT(answer.reason(), ::testing::HasSubstr("may not use this cnp-server"));
}

}  // namespace
}  // namespace cnp::session
