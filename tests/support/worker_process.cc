#include "tests/support/worker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "service/common/framing.h"
#include "tests/support/spawn.h"

namespace cnp::worker::testing {
namespace {

// Long enough for a slow machine, short enough that a hung worker fails the test.
constexpr absl::Duration kReplyTimeout = absl::Seconds(60);

std::string TestTmpDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir ? dir : "/tmp";
}

}  // namespace

std::string FunctionsDir() { return Runfile("tests/functions"); }

std::string RaisedAt(const std::string& file, const std::string& line_text,
                     const std::string& function) {
  std::ifstream in(FunctionsDir() + "/" + file);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.find(line_text) != std::string::npos) {
      return absl::StrCat(" (", file, ":", number, " in ", function, ")");
    }
  }
  ADD_FAILURE() << file << " has no line holding " << line_text;
  return "";
}

absl::StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::Start(std::vector<std::string> args,
                                                                   std::vector<std::string> env,
                                                                   std::string binary) {
  static std::atomic<int> started{0};
  std::string stderr_path =
      absl::StrCat(TestTmpDir(), "/worker-", getpid(), "-", started++, ".stderr");
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return absl::InternalError("socketpair failed");
  }
  if (binary.empty()) binary = Runfile("service/worker/cnp-worker");
  std::vector<std::string> argv = {std::move(binary), "--fd=3"};
  argv.insert(argv.end(), args.begin(), args.end());
  const int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  absl::StatusOr<pid_t> pid = ::cnp::testing::Spawn(
      {.argv = std::move(argv), .env = std::move(env), .fds = {{STDERR_FILENO, err}, {3, fds[1]}}});
  if (err >= 0) ::close(err);
  ::close(fds[1]);
  if (!pid.ok()) {
    ::close(fds[0]);
    return pid.status();
  }
  ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);  // so reads honour deadlines
  return std::unique_ptr<WorkerProcess>(new WorkerProcess(*pid, fds[0], stderr_path));
}

std::unique_ptr<WorkerProcess> WorkerProcess::StartWithFunctions(std::vector<std::string> args) {
  args.insert(args.begin(), absl::StrCat("--python-path=", FunctionsDir()));
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker = Start(std::move(args));
  EXPECT_TRUE(worker.ok()) << worker.status();
  return worker.ok() ? *std::move(worker) : nullptr;
}

WorkerProcess::~WorkerProcess() {
  if (fd_ >= 0) {
    ::kill(pid_, SIGKILL);
    CloseAndWait();
  }
}

absl::Status WorkerProcess::Send(const Task& task) {
  return WriteFrame(fd_, task.SerializeAsString(), absl::Now() + kReplyTimeout);
}

absl::Status WorkerProcess::SendWithDescriptors(const Task& task, const std::vector<int>& fds) {
  return WriteFrameWithDescriptors(fd_, task.SerializeAsString(), fds, absl::Now() + kReplyTimeout);
}

absl::StatusOr<Reply> WorkerProcess::Receive() {
  std::string frame;
  if (absl::Status s = ReadFrame(fd_, frame, absl::Now() + kReplyTimeout); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(s.message(), "; worker stderr: ", ReadStderr()));
  }
  Reply reply;
  if (!reply.ParseFromString(frame)) return absl::DataLossError("the reply is not a Reply");
  return reply;
}

Reply WorkerProcess::Call(const Task& task) {
  absl::Status sent = Send(task);
  EXPECT_TRUE(sent.ok()) << sent;
  absl::StatusOr<Reply> reply = Receive();
  EXPECT_TRUE(reply.ok()) << reply.status();
  return reply.ok() ? *std::move(reply) : Reply();
}

int WorkerProcess::CloseAndWait() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  int status = 0;
  if (::waitpid(pid_, &status, 0) != pid_) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string WorkerProcess::ReadStderr() const {
  std::ifstream in(stderr_path_);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Task MapTask(std::vector<std::string> functions, std::vector<std::string> docs) {
  Task task;
  for (std::string& f : functions) task.mutable_map()->add_functions(std::move(f));
  for (std::string& d : docs) task.mutable_map()->add_docs(std::move(d));
  return task;
}

Task ReduceTask(std::vector<std::string> functions, std::string kvs, bool rereduce) {
  Task task;
  for (std::string& f : functions) task.mutable_reduce()->add_functions(std::move(f));
  task.mutable_reduce()->set_kvs(std::move(kvs));
  task.mutable_reduce()->set_rereduce(rereduce);
  return task;
}

Task DesignTask(cnp::v1::DesignFunctionKind kind, std::string function, std::string args) {
  Task task;
  task.mutable_design()->set_kind(kind);
  task.mutable_design()->set_function(std::move(function));
  task.mutable_design()->set_args(std::move(args));
  return task;
}

Task ResolveTask(std::vector<std::string> functions) {
  Task task;
  for (std::string& f : functions) task.mutable_resolve()->add_functions(std::move(f));
  return task;
}

}  // namespace cnp::worker::testing
