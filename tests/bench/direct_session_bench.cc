// CouchDB's lockstep map_doc and reduce lines straight into a cnp-worker's direct session (the
// pipes handed over as cnp-server hands them), next to the pure-Python line server
// (pure_python_query_server.py) driven the same way in the same run. Where the worker's
// microseconds go is told by three map worker rows: map_doc with no map function (the pipes,
// the line reader and QuerySession's dispatch, no Python), one function, two functions. The
// reduce rows send lines of --reduce-rows rows each to one custom reduce function
// (fixture_fns.count_total, adapter_lockstep_bench's), figures per line.
//
//   bazel run -c opt //tests/bench:direct_session_bench [-- --docs=N --runs=R --reduce-rows=N]
//       [--baseline_worker=/path/to/another/build/cnp-worker]
//
// --baseline_worker adds the map (1 function) and reduce rows for another build of cnp-worker
// (its runfiles directory next to it, as `cp -rL bazel-bin/service/worker/cnp-worker{,.runfiles}`
// leaves it), interleaved with this build's, and prints this build's CPU per line against it.
//
// docs/s is wall time of the lockstep loop; CPU µs/doc is the serving process's own CPU time
// (/proc/<pid>/schedstat, ns) over the loop, start-up excluded; the driver's is shown apart.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <utility>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "service/common/shared_flag.h"
#include "tests/support/worker_process.h"

namespace {

using cnp::worker::testing::FunctionsDir;
using cnp::worker::testing::Reply;
using cnp::testing::Runfile;
using cnp::worker::testing::Task;
using cnp::worker::testing::WorkerProcess;
using Clock = std::chrono::steady_clock;

int IntFlag(int argc, char** argv, const char* name, int fallback, int low, int high) {
  const size_t n = std::strlen(name);
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') {
      return std::clamp(std::atoi(argv[i] + n + 1), low, high);
    }
  }
  return fallback;
}

// On-CPU time of a process so far, in ns (the scheduler's own account, not tick-sampled).
double CpuNs(pid_t pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/schedstat"));
  double ns = 0;
  stat >> ns;
  return ns;
}

// User and system CPU time of a process so far, in ns (clock ticks: coarse, fine over a run).
std::pair<double, double> UserSysNs(pid_t pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces) start at its closing parenthesis.
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  double user = 0, sys = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) user = std::stod(field);
    if (i == 15) sys = std::stod(field);
  }
  const double ns_per_tick = 1e9 / ::sysconf(_SC_CLK_TCK);
  return {user * ns_per_tick, sys * ns_per_tick};
}

double SelfCpuNs() {
  timespec now;
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return now.tv_sec * 1e9 + now.tv_nsec;
}

// CouchDB's side of a query server's stdin/stdout.
class LineChannel {
 public:
  LineChannel(int to, int from) : to_(to), from_(from) {}
  ~LineChannel() { Close(); }
  void Close() {
    if (to_ >= 0) ::close(to_);
    if (from_ >= 0) ::close(from_);
    to_ = from_ = -1;
  }
  void CloseInput() {
    if (to_ >= 0) ::close(to_);
    to_ = -1;
  }

  // Writes `line` (with its newline) and returns the next answer line (without it).
  bool Exchange(const std::string& line, std::string& answer) {
    for (size_t done = 0; done < line.size();) {
      ssize_t n = ::write(to_, line.data() + done, line.size() - done);
      if (n <= 0) return false;
      done += n;
    }
    for (;;) {
      if (size_t newline = buffer_.find('\n'); newline != std::string::npos) {
        answer.assign(buffer_, 0, newline);
        buffer_.erase(0, newline + 1);
        return true;
      }
      char chunk[65536];
      ssize_t n = ::read(from_, chunk, sizeof chunk);
      if (n <= 0) return false;
      buffer_.append(chunk, n);
    }
  }

 private:
  int to_, from_;
  std::string buffer_;
};

const char* StringFlag(int argc, char** argv, const char* name) {
  const size_t n = std::strlen(name);
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
  }
  return "";
}

constexpr char kReduceFunction[] = "fixture_fns.count_total|2";

// Reduce lines as CouchDB sends them for a custom reduce, `rows` rows each (the shape of
// adapter_lockstep_bench's).
std::vector<std::string> ReduceLines(int count, int rows) {
  const char* towns[] = {"Oslo", "Lima", "Kyoto", "Paris"};
  std::vector<std::string> lines;
  lines.reserve(count);
  for (int i = 0; i < count; ++i) {
    std::string kvs;
    for (int r = 0; r < rows; ++r) {
      absl::StrAppend(&kvs, r > 0 ? "," : "",
                      absl::StrFormat(R"([[["%s",%d],"doc-%06d-%d"],%d])", towns[(i + r) % 4],
                                      (i + r) % 3, i, r, i + r));
    }
    lines.push_back(
        absl::StrCat("[\"reduce\",[\"", kReduceFunction, "\"],[", kvs, "]]\n"));
  }
  return lines;
}

std::vector<std::string> DocLines(int count) {
  const char* towns[] = {"Oslo", "Lima", "Kyoto", "Paris"};
  std::vector<std::string> lines;
  lines.reserve(count);
  for (int i = 0; i < count; ++i) {
    lines.push_back(absl::StrFormat(
        R"(["map_doc",{"_id":"doc-%06d","_rev":"1-2101244a50b598053422a529f25605d9","type":"person","town":"%s","n":%d}])"
        "\n",
        i, towns[i % 4], i));
  }
  return lines;
}

struct Figures {
  double docs_per_second;
  double server_cpu_us;  // per document
  double server_user_us;
  double server_sys_us;
  double driver_cpu_us;
};

// reset, add_fun each function, a warm-up, then the timed lockstep loop.
bool Drive(LineChannel& channel, pid_t server, const std::vector<std::string>& functions,
           const std::vector<std::string>& lines, int warmup, Figures& figures) {
  std::string answer;
  if (!channel.Exchange("[\"reset\",{\"reduce_limit\":true,\"timeout\":5000}]\n", answer) ||
      answer != "true") {
    std::fprintf(stderr, "reset answered '%s'\n", answer.c_str());
    return false;
  }
  for (const std::string& function : functions) {
    if (!channel.Exchange(absl::StrCat("[\"add_fun\",\"", function, "\"]\n"), answer) ||
        answer != "true") {
      std::fprintf(stderr, "add_fun %s answered '%s'\n", function.c_str(), answer.c_str());
      return false;
    }
  }
  for (int i = 0; i < warmup; ++i) {
    if (!channel.Exchange(lines[i % lines.size()], answer)) return false;
  }
  const double server_before = CpuNs(server), driver_before = SelfCpuNs();
  const auto [user_before, sys_before] = UserSysNs(server);
  const Clock::time_point begin = Clock::now();
  for (const std::string& line : lines) {
    if (!channel.Exchange(line, answer) || answer.empty() || answer[0] != '[') {
      std::fprintf(stderr, "%.40s answered '%s'\n", line.c_str(), answer.c_str());
      return false;
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - begin).count();
  figures.docs_per_second = lines.size() / seconds;
  figures.server_cpu_us = (CpuNs(server) - server_before) / 1e3 / lines.size();
  figures.driver_cpu_us = (SelfCpuNs() - driver_before) / 1e3 / lines.size();
  const auto [user_after, sys_after] = UserSysNs(server);
  figures.server_user_us = (user_after - user_before) / 1e3 / lines.size();
  figures.server_sys_us = (sys_after - sys_before) / 1e3 / lines.size();
  return true;
}

bool RunWorker(const std::vector<std::string>& functions, const std::vector<std::string>& lines,
               int warmup, Figures& figures, const std::string& binary = "") {
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker =
      WorkerProcess::Start({absl::StrCat("--python-path=", FunctionsDir())}, {}, binary);
  if (!worker.ok()) return false;
  int commands[2], answers[2];
  if (::pipe2(commands, O_CLOEXEC) != 0 || ::pipe2(answers, O_CLOEXEC) != 0) return false;
  Task task;
  task.mutable_direct_session()->set_id("bench");
  // The server's word for where the session stands with CouchDB, as cnp-server hands it: the
  // worker's stores to it on every command are part of what is measured.
  absl::StatusOr<cnp::SharedFlag> turn = cnp::SharedFlag::Create();
  if (!turn.ok()) return false;
  if (!(*worker)->SendWithDescriptors(task, {commands[0], answers[1], turn->fd()}).ok()) {
    return false;
  }
  turn->CloseDescriptor();
  ::close(commands[0]);
  ::close(answers[1]);
  LineChannel channel(commands[1], answers[0]);
  bool ok = Drive(channel, (*worker)->pid(), functions, lines, warmup, figures);
  channel.CloseInput();
  absl::StatusOr<Reply> end = (*worker)->Receive();
  if (!end.ok() || !end->has_session_end()) {
    std::fprintf(stderr, "no session end: %s\n", (*worker)->ReadStderr().c_str());
    return false;
  }
  return ok && (*worker)->CloseAndWait() == 0;
}

bool RunPurePython(const std::vector<std::string>& functions,
                   const std::vector<std::string>& lines, int warmup, Figures& figures) {
  int commands[2], answers[2];
  if (::pipe2(commands, O_CLOEXEC) != 0 || ::pipe2(answers, O_CLOEXEC) != 0) return false;
  const std::string script = Runfile("tests/bench/pure_python_query_server.py");
  const std::string pythonpath = absl::StrCat("PYTHONPATH=", FunctionsDir(), ":",
                                              Runfile("service/python"));
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(commands[0], STDIN_FILENO);
    ::dup2(answers[1], STDOUT_FILENO);
    ::putenv(const_cast<char*>(pythonpath.c_str()));
    ::execl("/usr/bin/python3.11", "python3.11", script.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(commands[0]);
  ::close(answers[1]);
  LineChannel channel(commands[1], answers[0]);
  bool ok = Drive(channel, pid, functions, lines, warmup, figures);
  channel.Close();
  int status = 0;
  ::waitpid(pid, &status, 0);
  return ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// A process that answers each line with a fixed reply, parsing nothing and running nothing (the
// throw-away server of the direct-sessions issue, its "ceiling" on CouchDB). Its time per
// document is meant to be the pipes and the two processes' wake-ups alone; it is forked from
// this driver rather than exec'd, and on this VM it has measured both above and below the
// worker, so read it as the pipes' order of magnitude, not as a bound.
[[noreturn]] void AnswerWithoutParsing(int input, int output) {
  std::string head;  // the first bytes of the line being read: enough to tell map_doc apart
  char chunk[65536];
  for (;;) {
    ssize_t n = ::read(input, chunk, sizeof chunk);
    if (n <= 0) ::_exit(0);
    std::string answers;
    for (ssize_t i = 0; i < n; ++i) {
      if (chunk[i] != '\n') {
        if (head.size() < 3) head += chunk[i];
        continue;
      }
      // reset and add_fun are answered true; map_doc with an empty row list.
      answers += head == "[\"m" ? "[[]]\n" : "true\n";
      head.clear();
    }
    if (!answers.empty() && ::write(output, answers.data(), answers.size()) < 0) ::_exit(1);
  }
}

bool RunCeiling(const std::vector<std::string>& lines, int warmup, Figures& figures) {
  int commands[2], answers[2];
  if (::pipe2(commands, O_CLOEXEC) != 0 || ::pipe2(answers, O_CLOEXEC) != 0) return false;
  pid_t pid = ::fork();
  if (pid == 0) {
    // Its copies of our ends would keep it from ever seeing the end of its input.
    ::close(commands[1]);
    ::close(answers[0]);
    AnswerWithoutParsing(commands[0], answers[1]);
  }
  ::close(commands[0]);
  ::close(answers[1]);
  LineChannel channel(commands[1], answers[0]);
  bool ok = Drive(channel, pid, {}, lines, warmup, figures);
  channel.Close();
  int status = 0;
  ::waitpid(pid, &status, 0);
  return ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

struct Row {
  std::string name;
  std::function<bool(Figures&)> run;
  std::vector<Figures> runs;
};

}  // namespace

int main(int argc, char** argv) {
  const int docs = IntFlag(argc, argv, "--docs", 50000, 100, 2000000);
  const int runs = IntFlag(argc, argv, "--runs", 3, 1, 15);
  const int reduce_rows = IntFlag(argc, argv, "--reduce-rows", 10, 1, 1000);
  const std::string baseline = StringFlag(argc, argv, "--baseline_worker");
  ::signal(SIGPIPE, SIG_IGN);
  const std::vector<std::string> lines = DocLines(docs);
  const std::vector<std::string> reduce_lines = ReduceLines(docs, reduce_rows);
  const int warmup = std::min(docs, 2000);
  const std::string function = "fixture_fns.town_n|1";

  std::vector<Row> rows = {
      {"pure-Python line server, 1 function",
       [&](Figures& f) { return RunPurePython({function}, lines, warmup, f); }},
      {"cnp-worker direct session, 1 function",
       [&](Figures& f) { return RunWorker({function}, lines, warmup, f); }},
      {"cnp-worker direct session, 0 functions (no Python)",
       [&](Figures& f) { return RunWorker({}, lines, warmup, f); }},
      {"cnp-worker direct session, 2 functions",
       [&](Figures& f) { return RunWorker({function, "fixture_fns.town_mod3"}, lines, warmup, f); }},
      {"a process answering without parsing",
       [&](Figures& f) { return RunCeiling(lines, warmup, f); }},
      {"pure-Python line server, reduce",
       [&](Figures& f) { return RunPurePython({}, reduce_lines, warmup, f); }},
      {"cnp-worker direct session, reduce",
       [&](Figures& f) { return RunWorker({}, reduce_lines, warmup, f); }},
  };
  if (!baseline.empty()) {
    rows.push_back({"baseline cnp-worker direct session, 1 function",
                    [&](Figures& f) { return RunWorker({function}, lines, warmup, f, baseline); }});
    rows.push_back({"baseline cnp-worker direct session, reduce",
                    [&](Figures& f) { return RunWorker({}, reduce_lines, warmup, f, baseline); }});
  }
  // Interleaved, so that a slow stretch of the machine hits every row alike.
  for (int run = 0; run < runs; ++run) {
    for (Row& row : rows) {
      Figures figures;
      if (!row.run(figures)) {
        std::fprintf(stderr, "%s failed\n", row.name.c_str());
        return 1;
      }
      row.runs.push_back(figures);
    }
  }

  std::printf("lockstep map_doc and reduce lines over pipes, %d small docs (map) and %d reduce "
              "lines of %d rows per run, figures per line, median of %d runs\n",
              docs, docs, reduce_rows, runs);
  std::printf("%-52s %9s %14s %11s %11s %14s\n", "", "docs/s", "server CPU us", "of it user",
              "of it sys", "driver CPU us");
  std::vector<double> rates, cpus;
  for (const Row& row : rows) {
    std::vector<double> rate, cpu, user, sys, driver;
    for (const Figures& f : row.runs) {
      rate.push_back(f.docs_per_second);
      cpu.push_back(f.server_cpu_us);
      user.push_back(f.server_user_us);
      sys.push_back(f.server_sys_us);
      driver.push_back(f.driver_cpu_us);
    }
    rates.push_back(Median(rate));
    cpus.push_back(Median(cpu));
    std::printf("%-52s %9.0f %14.2f %11.2f %11.2f %14.2f\n", row.name.c_str(), rates.back(),
                cpus.back(), Median(user), Median(sys), Median(driver));
  }
  std::printf("direct session vs pure Python (1 function): %.2fx docs/s, %.2fx less CPU per doc\n",
              rates[1] / rates[0], cpus[0] / cpus[1]);
  std::printf("the worker's Python share per doc (1 function - 0 functions): %.2f us\n",
              cpus[1] - cpus[2]);
  std::printf("a process answering without parsing vs pure Python: %.2fx docs/s; the direct "
              "session's docs/s are %.0f%% of it, pure Python's %.0f%%\n",
              rates[4] / rates[0], 100 * rates[1] / rates[4], 100 * rates[0] / rates[4]);
  std::printf("reduce, direct session vs pure Python: %.2fx lines/s, %.2fx less CPU per line\n",
              rates[6] / rates[5], cpus[5] / cpus[6]);
  if (!baseline.empty()) {
    std::printf("this build vs --baseline_worker, server CPU us per line: map %.2f vs %.2f "
                "(%.2fx), reduce %.2f vs %.2f (%.2fx); lines/s map %.2fx, reduce %.2fx\n",
                cpus[1], cpus[7], cpus[7] / cpus[1], cpus[6], cpus[8], cpus[8] / cpus[6],
                rates[1] / rates[7], rates[6] / rates[8]);
  }
  return 0;
}
