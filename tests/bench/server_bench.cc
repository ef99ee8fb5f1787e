// Benchmark (not a test): batch Map through cnp-server with 1 and 2 workers against the same
// map done by a pure-Python loop (json.loads -> f -> json.dumps) in one Python process, and
// Validate latency with 16 concurrent callers. Every figure is measured in this run; the
// ratios are what to compare across machines.
//
//   bazel run -c opt //tests/bench:server_bench [-- --docs=200000 --batch=5000]
//
// With --baseline_server and --baseline_worker (another build of cnp-server and cnp-worker,
// e.g. of an older commit), it instead compares the two builds side by side, interleaved,
// --runs times, and prints the median of each figure: batch Map (2 workers), Validate at
// --callers and --many_callers concurrent callers (at --callers also its mean latency, which is
// callers / throughput, and the server's and this client's CPU per call), the Session stream in
// lockstep (CouchDB's remote path), and the threads of the idle server. --validate_only measures
// the Validate figures alone, for more runs in the same time.
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/support/server_process.h"

ABSL_FLAG(int, docs, 200000, "documents mapped per measurement");
ABSL_FLAG(int, batch, 5000, "documents per Map call");
ABSL_FLAG(int, concurrency, 2,
          "Map calls in flight at once, as a batch caller keeps its connection busy while the "
          "service works");
ABSL_FLAG(int, validate_calls, 300, "Validate calls per concurrent caller");
ABSL_FLAG(int, callers, 16, "concurrent Validate callers");
ABSL_FLAG(int, many_callers, 256, "concurrent Validate callers of the second latency figure");
ABSL_FLAG(int, many_callers_calls, 20, "Validate calls per caller of the second figure");
ABSL_FLAG(int, session_docs, 20000, "map_doc lines sent in lockstep over one Session stream");
ABSL_FLAG(std::string, baseline_server, "", "a cnp-server build to compare with");
ABSL_FLAG(std::string, baseline_worker, "", "the cnp-worker of that build");
ABSL_FLAG(bool, validate_only, false,
          "with --baseline_server: measure only Validate (and the idle threads), for more runs "
          "in the same time");
ABSL_FLAG(int, runs, 3, "comparison runs (each measures both builds); medians are printed");

namespace {

using cnp::testing::ServerProcess;

const char kFunctions[] = R"(from couch_named_python import Forbidden, version

@version(1)
def town(doc):
    yield doc["town"], 1

def guard(new, old, userctx, secobj):
    if "town" not in new:
        raise Forbidden("no town")
)";

// A Python process doing the worker's job in-process: the baseline.
const char kPurePython[] = R"(import json, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[3]]
import benchfns
f = benchfns.town
lines = open(sys.argv[2]).read().splitlines()
for line in lines[:1000]:
    json.dumps([list(f(json.loads(line)))])
wall, cpu = time.perf_counter(), time.process_time()
for line in lines:
    json.dumps([list(f(json.loads(line)))])
print(time.perf_counter() - wall, time.process_time() - cpu)
)";

double CpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string f;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stol(f);
    if (i == 15) stime = std::stol(f);
  }
  return static_cast<double>(utime + stime) / ::sysconf(_SC_CLK_TCK);
}

// CPU of a process's children (the server's workers).
double ChildrenCpuSeconds(pid_t root) {
  double total = 0;
  DIR* proc = ::opendir("/proc");
  while (dirent* entry = ::readdir(proc)) {
    pid_t pid = static_cast<pid_t>(std::atoi(entry->d_name));
    if (pid <= 0) continue;
    std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (stat.empty()) continue;
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));
    std::string state;
    pid_t ppid = 0;
    fields >> state >> ppid;
    if (ppid == root) total += CpuSeconds(pid);
  }
  ::closedir(proc);
  return total;
}

double SelfCpuSeconds() {
  rusage usage;
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

struct Figures {
  double docs_per_second = 0;
  double cpu_us_per_doc = 0;
  // Where the CPU went, per document.
  double client_us = 0, server_us = 0, workers_us = 0;
};

// Which build of the programs to run.
struct Build {
  std::string name;
  std::string server;  // empty: this build's own
  std::string worker;
};

std::unique_ptr<ServerProcess> StartServer(const Build& build, const std::string& module_dir,
                                           int workers) {
  std::vector<std::string> args{"--python-path=" + module_dir,
                                absl::StrCat("--workers=", workers), "--log-level=warning"};
  auto server = build.server.empty() ? ServerProcess::Start(args)
                                     : ServerProcess::Start(args, build.server, build.worker);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", std::string(server.status().message()).c_str());
    std::exit(1);
  }
  return std::move(*server);
}

Figures MeasureMap(ServerProcess* server, const std::vector<std::string>& docs, int batch) {
  std::vector<std::vector<std::string>> batches;
  for (size_t i = 0; i < docs.size(); i += batch) {
    batches.emplace_back(docs.begin() + i, docs.begin() + std::min(docs.size(), i + batch));
  }
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  std::vector<std::unique_ptr<cnp::client::Client>> clients;
  for (int i = 0; i < concurrency; ++i) clients.push_back(server->Connect());
  (void)clients[0]->Map({"benchfns.town|1"}, batches.front());  // warm up the workers
  const pid_t pid = server->pid();
  double client_before = SelfCpuSeconds(), server_before = CpuSeconds(pid),
         workers_before = ChildrenCpuSeconds(pid);
  absl::Time start = absl::Now();
  std::atomic<size_t> next{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < concurrency; ++c) {
    callers.emplace_back([&, c] {
      for (size_t i = next++; i < batches.size(); i = next++) {
        auto r = clients[c]->Map({"benchfns.town|1"}, batches[i]);
        if (!r.ok() || r->results_size() != static_cast<int>(batches[i].size())) {
          std::fprintf(stderr, "Map failed: %s\n", std::string(r.status().message()).c_str());
          std::exit(1);
        }
      }
    });
  }
  for (std::thread& t : callers) t.join();
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const double per_doc = 1e6 / docs.size();
  Figures f;
  f.docs_per_second = docs.size() / seconds;
  f.client_us = (SelfCpuSeconds() - client_before) * per_doc;
  f.server_us = (CpuSeconds(pid) - server_before) * per_doc;
  f.workers_us = (ChildrenCpuSeconds(pid) - workers_before) * per_doc;
  f.cpu_us_per_doc = f.client_us + f.server_us + f.workers_us;
  return f;
}

struct Latency {
  double p50_us = 0, p99_us = 0, calls_per_second = 0;
  // By Little's law the mean is callers / throughput: a queue that serves callers in turn
  // has its p50 near it, one that lets some callers overtake others lowers p50 and raises p99.
  double mean_us = 0;
  double server_us_per_call = 0, client_us_per_call = 0;
};

Latency MeasureValidate(ServerProcess* server, const std::vector<std::string>& docs, int callers,
                        int calls) {
  std::vector<std::vector<double>> latencies(callers);
  std::vector<std::unique_ptr<cnp::client::Client>> clients;
  for (int c = 0; c < callers; ++c) clients.push_back(server->Connect());
  std::vector<std::thread> threads;
  const double server_before = CpuSeconds(server->pid()), client_before = SelfCpuSeconds();
  absl::Time start = absl::Now();
  for (int c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      cnp::v1::ValidateRequest request;
      request.set_function("benchfns.guard");
      request.set_new_doc(docs[c]);
      request.set_user_ctx(R"({"db":"bench","name":"bob","roles":[]})");
      for (int i = 0; i < calls; ++i) {
        absl::Time t = absl::Now();
        auto r = clients[c]->Validate(request);
        if (!r.ok() || r->outcome() != cnp::v1::ValidateResponse::OK) {
          std::fprintf(stderr, "Validate failed: %s\n", std::string(r.status().message()).c_str());
          std::exit(1);
        }
        latencies[c].push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
      }
    });
  }
  for (auto& t : threads) t.join();
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const double server_seconds = CpuSeconds(server->pid()) - server_before;
  const double client_seconds = SelfCpuSeconds() - client_before;
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  Latency latency;
  latency.p50_us = all[all.size() / 2];
  latency.p99_us = all[all.size() * 99 / 100];
  latency.calls_per_second = all.size() / seconds;
  latency.mean_us = std::accumulate(all.begin(), all.end(), 0.0) / all.size();
  latency.server_us_per_call = server_seconds * 1e6 / all.size();
  latency.client_us_per_call = client_seconds * 1e6 / all.size();
  return latency;
}

// CouchDB's remote path: map_doc lines over one Session stream, each answered before the next
// is sent (as CouchDB waits for every answer).
struct Lockstep {
  double docs_per_second = 0, server_us = 0, workers_us = 0;
};

Lockstep MeasureSession(ServerProcess* server, const std::vector<std::string>& docs, int n) {
  auto stub = cnp::v1::Functions::NewStub(
      grpc::CreateChannel(server->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto stream = stub->Session(&context);
  auto exchange = [&](const std::string& line, bool answered) {
    cnp::v1::SessionInput input;
    input.set_line(line);
    cnp::v1::SessionOutput output;
    if (!stream->Write(input) || (answered && !stream->Read(&output))) {
      std::fprintf(stderr, "the Session stream failed\n");
      std::exit(1);
    }
  };
  exchange(R"(["reset",{"reduce_limit":true,"timeout":5000}])", false);
  exchange(R"(["add_fun","benchfns.town|1"])", true);
  std::vector<std::string> lines;
  for (int i = 0; i < n; ++i) {
    lines.push_back(absl::StrCat(R"(["map_doc",)", docs[i % docs.size()], "]"));
  }
  for (int i = 0; i < 1000; ++i) exchange(lines[i % lines.size()], true);  // warm up
  const pid_t pid = server->pid();
  const double server_before = CpuSeconds(pid), workers_before = ChildrenCpuSeconds(pid);
  const absl::Time start = absl::Now();
  for (const std::string& line : lines) exchange(line, true);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  stream->WritesDone();
  (void)stream->Finish();
  return {n / seconds, (CpuSeconds(pid) - server_before) * 1e6 / n,
          (ChildrenCpuSeconds(pid) - workers_before) * 1e6 / n};
}

int CountThreads(pid_t pid) {
  int threads = 0;
  DIR* tasks = ::opendir(absl::StrCat("/proc/", pid, "/task").c_str());
  if (tasks == nullptr) return -1;
  while (dirent* entry = ::readdir(tasks)) threads += entry->d_name[0] != '.';
  ::closedir(tasks);
  return threads;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Both builds side by side, interleaved, each figure the median of --runs.
int Compare(const std::string& dir, const std::vector<std::string>& docs) {
  const std::vector<Build> builds = {
      {"baseline", absl::GetFlag(FLAGS_baseline_server), absl::GetFlag(FLAGS_baseline_worker)},
      {"this build", "", ""}};
  const int runs = absl::GetFlag(FLAGS_runs);
  const int callers = absl::GetFlag(FLAGS_callers);
  const int many = absl::GetFlag(FLAGS_many_callers);
  enum Figure {
    kThreads, kMapDocs, kMapCpu, kMapServer, kV16p50, kV16p99, kV16mean, kV16rate, kV16server, kV16client,
    kVManyp50, kVManyp99, kVManyrate, kSessionDocs, kSessionServer, kSessionWorkers, kFigures
  };
  const char* names[kFigures] = {
      "threads of the idle server (2 workers)",
      "batch Map, 2 workers: docs/s",
      "batch Map: CPU us/doc (all processes)",
      "batch Map: server CPU us/doc",
      "Validate p50 us, 16 callers",
      "Validate p99 us, 16 callers",
      "Validate mean us, 16 callers",
      "Validate calls/s, 16 callers",
      "Validate server CPU us/call, 16 callers",
      "Validate client CPU us/call, 16 callers",
      "Validate p50 us, many callers",
      "Validate p99 us, many callers",
      "Validate calls/s, many callers",
      "Session lockstep map_doc: docs/s",
      "Session lockstep: server CPU us/doc",
      "Session lockstep: worker CPU us/doc"};
  std::vector<std::vector<std::vector<double>>> figures(
      builds.size(), std::vector<std::vector<double>>(kFigures));
  for (int run = 0; run < runs; ++run) {
    for (size_t b = 0; b < builds.size(); ++b) {
      std::fprintf(stderr, "run %d of %d: %s\n", run + 1, runs, builds[b].name.c_str());
      auto server = StartServer(builds[b], dir, 2);
      auto& f = figures[b];
      {
        // Idle: up, nothing asked yet beyond the start-up check.
        auto client = server->Connect();
        f[kThreads].push_back(CountThreads(server->pid()));
      }
      const bool all_figures = !absl::GetFlag(FLAGS_validate_only);
      if (all_figures) {
        Figures map = MeasureMap(server.get(), docs, absl::GetFlag(FLAGS_batch));
        f[kMapDocs].push_back(map.docs_per_second);
        f[kMapCpu].push_back(map.cpu_us_per_doc);
        f[kMapServer].push_back(map.server_us);
      }
      Latency v16 = MeasureValidate(server.get(), docs, callers,
                                    absl::GetFlag(FLAGS_validate_calls));
      f[kV16p50].push_back(v16.p50_us);
      f[kV16p99].push_back(v16.p99_us);
      f[kV16mean].push_back(v16.mean_us);
      f[kV16rate].push_back(v16.calls_per_second);
      f[kV16server].push_back(v16.server_us_per_call);
      f[kV16client].push_back(v16.client_us_per_call);
      Latency vmany = MeasureValidate(server.get(), docs, many,
                                      absl::GetFlag(FLAGS_many_callers_calls));
      f[kVManyp50].push_back(vmany.p50_us);
      f[kVManyp99].push_back(vmany.p99_us);
      f[kVManyrate].push_back(vmany.calls_per_second);
      if (all_figures) {
        Lockstep session =
            MeasureSession(server.get(), docs, absl::GetFlag(FLAGS_session_docs));
        f[kSessionDocs].push_back(session.docs_per_second);
        f[kSessionServer].push_back(session.server_us);
        f[kSessionWorkers].push_back(session.workers_us);
      }
    }
  }
  if (absl::GetFlag(FLAGS_validate_only)) {
    std::printf("cnp-server, two builds side by side: median of %d interleaved runs; Validate %d "
                "and %d callers\n\n", runs, callers, many);
  } else {
    std::printf("cnp-server, two builds side by side: median of %d interleaved runs; %d docs in "
                "%d-doc Map calls (%d in flight), Validate %d and %d callers, %d lockstep "
                "lines\n\n",
                runs, static_cast<int>(docs.size()), absl::GetFlag(FLAGS_batch),
                absl::GetFlag(FLAGS_concurrency), callers, many,
                absl::GetFlag(FLAGS_session_docs));
  }
  std::printf("%-42s %12s %12s %8s\n", "", "baseline", "this build", "ratio");
  for (int i = 0; i < kFigures; ++i) {
    if (figures[0][i].empty()) continue;  // not measured (--validate_only)
    const double before = Median(figures[0][i]), after = Median(figures[1][i]);
    std::printf("%-42s %12.2f %12.2f %7.2fx\n", names[i], before, after,
                before != 0 ? after / before : 0.0);
  }
  std::printf("\nruns (baseline | this build):\n");
  for (int i = 0; i < kFigures; ++i) {
    if (figures[0][i].empty()) continue;
    std::printf("  %-40s", names[i]);
    for (size_t b = 0; b < builds.size(); ++b) {
      for (double v : figures[b][i]) std::printf(" %.1f", v);
      std::printf(b == 0 ? " |" : "\n");
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int n = absl::GetFlag(FLAGS_docs);
  const char* towns[] = {"Oslo", "Kyoto", "Lima", "Paris"};
  std::vector<std::string> docs;
  docs.reserve(n);
  for (int i = 0; i < n; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "doc-%07d", i);
    docs.push_back(absl::StrCat(R"({"_id":")", id, R"(","_rev":"1-967a00dff5e02add41819138abb3284d","town":")",
                                towns[i % 4], R"(","n":)", i, "}"));
  }
  std::string dir = cnp::testing::MakeTempDir("bench");
  std::ofstream(dir + "/benchfns.py") << kFunctions;
  {
    std::ofstream out(dir + "/docs.ndjson");
    for (const std::string& d : docs) out << d << "\n";
  }
  std::ofstream(dir + "/pure.py") << kPurePython;
  if (!absl::GetFlag(FLAGS_baseline_server).empty()) return Compare(dir, docs);

  std::printf("cnp-server batch Map: %d small documents, %d per call, %d calls in flight, "
              "map `yield doc[\"town\"], 1`\n\n",
              n, absl::GetFlag(FLAGS_batch), absl::GetFlag(FLAGS_concurrency));
  FILE* py = ::popen(absl::StrCat("/usr/bin/python3.11 ", dir, "/pure.py ", dir, " ", dir, "/docs.ndjson ",
                                cnp::testing::Runfile("service/python")).c_str(), "r");
  double py_wall = 0, py_cpu = 0;
  if (py == nullptr || std::fscanf(py, "%lf %lf", &py_wall, &py_cpu) != 2) {
    std::fprintf(stderr, "the pure-Python baseline failed\n");
    return 1;
  }
  ::pclose(py);
  Figures baseline{n / py_wall, py_cpu * 1e6 / n};
  const Build self{"this build", "", ""};
  Figures one = MeasureMap(StartServer(self, dir, 1).get(), docs, absl::GetFlag(FLAGS_batch));
  Figures two = MeasureMap(StartServer(self, dir, 2).get(), docs, absl::GetFlag(FLAGS_batch));

  std::printf("%-40s %10s %11s %10s   %s\n", "", "docs/s", "CPU us/doc", "x baseline",
              "CPU us/doc: client / server / workers");
  auto row = [&](const char* name, const Figures& f) {
    std::printf("%-40s %10.0f %11.2f %9.2fx", name, f.docs_per_second, f.cpu_us_per_doc,
                f.docs_per_second / baseline.docs_per_second);
    if (f.server_us > 0) std::printf("   %.2f / %.2f / %.2f", f.client_us, f.server_us, f.workers_us);
    std::printf("\n");
  };
  row("pure Python in one process (baseline)", baseline);
  row("cnp-server, 1 worker", one);
  row("cnp-server, 2 workers", two);
  std::printf("\n2 workers vs baseline: %.2fx (target >= 2x)\n\n",
              two.docs_per_second / baseline.docs_per_second);

  // Validate latency under concurrency.
  auto server = StartServer(self, dir, 2);
  const int callers = absl::GetFlag(FLAGS_callers);
  Latency v = MeasureValidate(server.get(), docs, callers, absl::GetFlag(FLAGS_validate_calls));
  std::printf("Validate, %d concurrent callers, 2 workers, %d calls: p50 %.0f us, p99 %.0f us, %.0f calls/s\n",
              callers, callers * absl::GetFlag(FLAGS_validate_calls), v.p50_us, v.p99_us,
              v.calls_per_second);
  return 0;
}
