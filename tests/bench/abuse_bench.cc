// Benchmark (not a test): cnp-server under abuse, bounded in time, on a unix socket only.
//
// Against one server (2 workers) it opens, in turn and all held at once: 10,000 idle
// connections (an HTTP/2 preface and nothing more), 1,000 CouchDB Session streams left idle
// after one exchange, a client reading a MapStream slowly, and one Map call of 100 MB. It prints
// the server's resident memory and open file descriptors (from /proc) at each step and after
// everything is let go, and the latency of a normal Validate and a one-document Map measured
// meanwhile, against the same calls on the same server while it was idle (median of 3 rounds).
//
//   bazel run -c opt //tests/bench:abuse_bench [-- --idle_connections=10000 --sessions=1000]
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "tests/support/server_process.h"

ABSL_FLAG(int, idle_connections, 10000, "idle connections held open");
ABSL_FLAG(int, sessions, 1000, "idle Session streams held open");
ABSL_FLAG(int64_t, big_call_bytes, 100'000'000, "bytes of the one big Map call");
ABSL_FLAG(int, probe_calls, 500, "Validate and Map calls per latency round (3 rounds)");

namespace {

using cnp::testing::ServerProcess;

struct Sample {
  int64_t rss = 0;  // VmRSS, bytes
  int64_t hwm = 0;  // VmHWM, bytes
  int fds = 0;
};

Sample Measure(pid_t pid) {
  Sample s;
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string key;
  while (status >> key) {
    int64_t kb;
    if (key == "VmRSS:" && status >> kb) s.rss = kb << 10;
    if (key == "VmHWM:" && status >> kb) s.hwm = kb << 10;
  }
  if (DIR* dir = ::opendir(absl::StrCat("/proc/", pid, "/fd").c_str())) {
    while (dirent* e = ::readdir(dir)) s.fds += e->d_name[0] != '.';
    ::closedir(dir);
  }
  return s;
}

void Print(const char* phase, const Sample& s) {
  std::printf("%-44s RSS %6.1f MiB  peak %6.1f MiB  fds %6d\n", phase, s.rss / 1048576.0,
              s.hwm / 1048576.0, s.fds);
  std::fflush(stdout);
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& target, int id) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  args.SetInt("cnp.bench.channel", id);  // a connection of its own, not a shared one
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

struct Latency {
  double p50_us = 0, p99_us = 0;
};

Latency Percentiles(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  return {us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)]};
}

// Rounds of `calls` Validate and one-document Map calls, one at a time on one channel: three,
// and more while `more()` says so; the median round's p50 and p99 of each.
std::pair<Latency, Latency> Probe(const std::string& target, int calls,
                                  const std::function<bool()>& more = [] { return false; }) {
  auto stub = cnp::v1::Functions::NewStub(NewChannel(target, -1));
  std::vector<Latency> validate, map;
  for (int round = 0; round < 3 || more(); ++round) {
    std::vector<double> v, m;
    for (int i = 0; i < calls; ++i) {
      cnp::v1::ValidateRequest request;
      request.set_function("svc_fns.guard|3");
      request.set_new_doc(R"({"_id":"x","n":1})");
      cnp::v1::ValidateResponse response;
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      absl::Time start = absl::Now();
      grpc::Status status = stub->Validate(&context, request, &response);
      v.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
      if (!status.ok()) std::fprintf(stderr, "validate failed: %s\n", status.error_message().c_str());

      cnp::v1::MapRequest map_request;
      map_request.add_functions("svc_fns.by_town|7");
      map_request.add_docs(R"({"_id":"x","town":"Oslo","n":1})");
      cnp::v1::MapResponse map_response;
      grpc::ClientContext map_context;
      map_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      start = absl::Now();
      status = stub->Map(&map_context, map_request, &map_response);
      m.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
      if (!status.ok()) std::fprintf(stderr, "map failed: %s\n", status.error_message().c_str());
    }
    validate.push_back(Percentiles(v));
    map.push_back(Percentiles(m));
  }
  auto median = [](std::vector<Latency> rounds) {
    const size_t mid = rounds.size() / 2;
    std::sort(rounds.begin(), rounds.end(), [](auto& a, auto& b) { return a.p50_us < b.p50_us; });
    Latency out{rounds[mid].p50_us, 0};
    std::sort(rounds.begin(), rounds.end(), [](auto& a, auto& b) { return a.p99_us < b.p99_us; });
    out.p99_us = rounds[mid].p99_us;
    return out;
  };
  return {median(validate), median(map)};
}

// A connection that speaks the HTTP/2 preface and then nothing: as idle as a client can be
// and still hold a server's connection.
int IdleConnection(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  static const char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
  (void)!::write(fd, kPreface, sizeof kPreface - 1);
  return fd;
}

struct Session {
  std::unique_ptr<grpc::ClientContext> context;
  std::unique_ptr<grpc::ClientReaderWriter<cnp::v1::SessionInput, cnp::v1::SessionOutput>> stream;
};

// A MapStream client that writes requests as fast as the server takes them and reads one
// answer every 50 ms: the server must hold back, not buffer everything.
class SlowReader {
 public:
  explicit SlowReader(const std::string& target) : stub_(cnp::v1::Functions::NewStub(NewChannel(target, -2))) {
    stream_ = stub_->MapStream(&context_);
    writer_ = std::thread([this] {
      cnp::v1::MapRequest request;
      request.add_functions("svc_fns.by_town|7");
      for (int i = 0; i < 2000; ++i) request.add_docs(R"({"town":"Oslo","n":1})");
      while (!stop_ && stream_->Write(request)) ++written_;
    });
    reader_ = std::thread([this] {
      cnp::v1::MapResponse response;
      while (!stop_ && stream_->Read(&response)) {
        ++read_;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the slowness itself
      }
    });
  }
  ~SlowReader() {
    stop_ = true;
    context_.TryCancel();
    writer_.join();
    reader_.join();
    stream_->Finish();
  }
  int written() const { return written_; }
  int read() const { return read_; }

 private:
  std::unique_ptr<cnp::v1::Functions::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<cnp::v1::MapRequest, cnp::v1::MapResponse>> stream_;
  std::atomic<bool> stop_{false};
  std::atomic<int> written_{0}, read_{0};
  std::thread writer_, reader_;
};

// One Map call of about `bytes` bytes (documents of 100 bytes), sent as bytes.
grpc::Status BigCall(const std::string& target, int64_t bytes, int64_t* response_bytes) {
  const std::string function = "svc_fns.by_town|7";
  std::string doc = R"({"town":"Oslo","n":1,"pad":")";
  doc += std::string(100 - doc.size() - 2, 'x') + "\"}";
  std::string one = absl::StrCat("\x12", std::string(1, static_cast<char>(doc.size())), doc);
  std::string request = absl::StrCat("\x0a", std::string(1, static_cast<char>(function.size())), function);
  request.reserve(bytes + one.size());
  while (static_cast<int64_t>(request.size()) < bytes) request += one;
  grpc::GenericStub stub(NewChannel(target, -3));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  grpc::Slice slice(request);
  grpc::ByteBuffer in(&slice, 1), out;
  request.clear();
  request.shrink_to_fit();
  grpc::CompletionQueue cq;
  grpc::Status status;
  auto call = stub.PrepareUnaryCall(&context, "/cnp.v1.Functions/Map", in, &cq);
  call->StartCall();
  call->Finish(&out, &status, &cq);
  void* tag;
  bool ok;
  cq.Next(&tag, &ok);
  *response_bytes = out.Length();
  return status;
}

void PrintLatency(const char* when, const std::pair<Latency, Latency>& l) {
  std::printf("%-44s Validate p50 %7.0f us  p99 %7.0f us | Map p50 %7.0f us  p99 %7.0f us\n",
              when, l.first.p50_us, l.first.p99_us, l.second.p50_us, l.second.p99_us);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  // 10,000 connections need that many descriptors here and in the server, which inherits this.
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  const rlim_t wanted = absl::GetFlag(FLAGS_idle_connections) + 4096;
  limit.rlim_max = std::max(limit.rlim_max, wanted);
  limit.rlim_cur = std::max(limit.rlim_cur, wanted);
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    std::fprintf(stderr, "cannot raise RLIMIT_NOFILE to %lu: %s\n", (unsigned long)wanted,
                 std::strerror(errno));
    return 1;
  }
  const int64_t big = absl::GetFlag(FLAGS_big_call_bytes);
  auto server = ServerProcess::Start(
      {"--python-path=" + cnp::testing::Runfile("tests/functions/server"), "--workers=2",
       absl::StrCat("--max-call-bytes=", big + (16 << 20)), "--shutdown-grace=10s"});
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  const std::string target = (*server)->target();
  const pid_t pid = (*server)->pid();
  const int probe = absl::GetFlag(FLAGS_probe_calls);
  std::printf("cnp-server (2 workers) on %s; latency: %d calls x 3 rounds, median round\n\n",
              target.c_str(), probe);

  Probe(target, 100);  // warm up
  Print("idle", Measure(pid));
  const auto idle = Probe(target, probe);
  PrintLatency("idle server", idle);

  const absl::Time abuse_start = absl::Now();
  std::vector<int> idle_fds;
  const std::string path = target.substr(5);
  for (int i = 0; i < absl::GetFlag(FLAGS_idle_connections); ++i) {
    int fd = IdleConnection(path);
    if (fd < 0) {
      std::printf("connection %d refused: %s\n", i, std::strerror(errno));
      break;
    }
    idle_fds.push_back(fd);
  }
  Print(absl::StrCat("+ ", idle_fds.size(), " idle connections").c_str(), Measure(pid));

  std::vector<std::shared_ptr<grpc::Channel>> session_channels;
  std::vector<std::unique_ptr<cnp::v1::Functions::Stub>> session_stubs;
  for (int c = 0; c < 10; ++c) {
    session_channels.push_back(NewChannel(target, c));
    session_stubs.push_back(cnp::v1::Functions::NewStub(session_channels.back()));
  }
  std::vector<Session> sessions;
  int sessions_failed = 0;
  for (int i = 0; i < absl::GetFlag(FLAGS_sessions); ++i) {
    Session s;
    s.context = std::make_unique<grpc::ClientContext>();
    s.stream = session_stubs[i % session_stubs.size()]->Session(s.context.get());
    cnp::v1::SessionInput input;
    input.set_line(R"(["add_fun","svc_fns.doubled"])");
    cnp::v1::SessionOutput output;
    if (!s.stream->Write(input) || !s.stream->Read(&output)) ++sessions_failed;
    sessions.push_back(std::move(s));
  }
  Print(absl::StrCat("+ ", sessions.size() - sessions_failed, " idle sessions").c_str(),
        Measure(pid));

  auto slow = std::make_unique<SlowReader>(target);
  int64_t big_response = 0;
  grpc::Status big_status;
  std::atomic<bool> big_done{false};
  absl::Duration big_took;
  std::thread big_call([&] {
    const absl::Time start = absl::Now();
    big_status = BigCall(target, big, &big_response);
    big_took = absl::Now() - start;
    big_done = true;
  });
  // The server's most memory and descriptors while the big call runs, sampled every 20 ms.
  Sample most;
  std::thread sampler([&] {
    while (!big_done) {
      Sample s = Measure(pid);
      most.rss = std::max(most.rss, s.rss);
      most.hwm = std::max(most.hwm, s.hwm);
      most.fds = std::max(most.fds, s.fds);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  const auto during = Probe(target, probe, [&] { return !big_done.load(); });
  big_call.join();
  sampler.join();
  Print(absl::StrCat("+ slow MapStream reader, ", big / 1000000, " MB Map call (most)").c_str(),
        most);
  Print("  the big call answered", Measure(pid));
  PrintLatency("during all of it", during);
  std::printf("  the %lld-byte call: %s in %.1f s, %lld-byte answer; slow reader: %d requests "
              "written, %d answers read\n",
              (long long)big, big_status.ok() ? "OK" : big_status.error_message().c_str(),
              absl::ToDoubleSeconds(big_took), (long long)big_response, slow->written(),
              slow->read());

  slow.reset();
  for (Session& s : sessions) {
    s.stream->WritesDone();
    s.stream->Finish();
  }
  sessions.clear();
  session_stubs.clear();
  session_channels.clear();
  for (int fd : idle_fds) ::close(fd);
  // The server notices closed connections asynchronously: wait (bounded) for its fds to settle.
  Sample after = Measure(pid);
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (after.fds > 64 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(100));
    after = Measure(pid);
  }
  Print("after everything is let go", after);
  // The server trims its heap every 10 s: measure again after the next trim.
  absl::SleepFor(absl::Seconds(11));
  Print("after the server's next heap trim", Measure(pid));
  const auto later = Probe(target, probe);
  PrintLatency("after", later);
  std::printf("\nratio during/idle: Validate p50 %.2fx p99 %.2fx | Map p50 %.2fx p99 %.2fx; "
              "abuse phase %.1f s\n",
              during.first.p50_us / idle.first.p50_us, during.first.p99_us / idle.first.p99_us,
              during.second.p50_us / idle.second.p50_us,
              during.second.p99_us / idle.second.p99_us,
              absl::ToDoubleSeconds(absl::Now() - abuse_start));

  const absl::Time term = absl::Now();
  (*server)->Signal(SIGTERM);
  const int status = (*server)->WaitForExit();
  std::printf("SIGTERM to exit: %.0f ms, %s\n", absl::ToDoubleMilliseconds(absl::Now() - term),
              WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "exit 0" : "FAILED");
  return 0;
}
