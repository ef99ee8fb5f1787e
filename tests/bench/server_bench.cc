// Benchmark (not a test): batch Map through cnp-server with 1 and 2 workers against the same
// map done by a pure-Python loop (json.loads -> f -> json.dumps) in one Python process, and
// Validate latency with 16 concurrent callers. Every figure is measured in this run; the
// ratios are what to compare across machines.
//
//   bazel run -c opt //tests/bench:server_bench [-- --docs=200000 --batch=5000]
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/support/server_process.h"

ABSL_FLAG(int, docs, 200000, "documents mapped per measurement");
ABSL_FLAG(int, batch, 5000, "documents per Map call");
ABSL_FLAG(int, concurrency, 2,
          "Map calls in flight at once, as a batch caller keeps its connection busy while the "
          "service works");
ABSL_FLAG(int, validate_calls, 300, "Validate calls per concurrent caller");
ABSL_FLAG(int, callers, 16, "concurrent Validate callers");

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

Figures MeasureMap(const std::string& module_dir, int workers, const std::vector<std::string>& docs,
                   int batch) {
  auto server = ServerProcess::Start({"--python-path=" + module_dir,
                                      absl::StrCat("--workers=", workers), "--log-level=warning"});
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", std::string(server.status().message()).c_str());
    std::exit(1);
  }
  std::vector<std::vector<std::string>> batches;
  for (size_t i = 0; i < docs.size(); i += batch) {
    batches.emplace_back(docs.begin() + i, docs.begin() + std::min(docs.size(), i + batch));
  }
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  std::vector<std::unique_ptr<cnp::client::Client>> clients;
  for (int i = 0; i < concurrency; ++i) clients.push_back((*server)->Connect());
  (void)clients[0]->Map({"benchfns.town|1"}, batches.front());  // warm up the workers
  const pid_t pid = (*server)->pid();
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
  Figures one = MeasureMap(dir, 1, docs, absl::GetFlag(FLAGS_batch));
  Figures two = MeasureMap(dir, 2, docs, absl::GetFlag(FLAGS_batch));

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
  auto server = ServerProcess::Start({"--python-path=" + dir, "--workers=2", "--log-level=warning"});
  if (!server.ok()) return 1;
  const int callers = absl::GetFlag(FLAGS_callers);
  const int calls = absl::GetFlag(FLAGS_validate_calls);
  std::vector<std::vector<double>> latencies(callers);
  std::vector<std::thread> threads;
  absl::Time start = absl::Now();
  for (int c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      auto client = (*server)->Connect();
      cnp::v1::ValidateRequest request;
      request.set_function("benchfns.guard");
      request.set_new_doc(docs[c]);
      request.set_user_ctx(R"({"db":"bench","name":"bob","roles":[]})");
      for (int i = 0; i < calls; ++i) {
        absl::Time t = absl::Now();
        auto r = client->Validate(request);
        if (!r.ok() || r->outcome() != cnp::v1::ValidateResponse::OK) std::exit(1);
        latencies[c].push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
      }
    });
  }
  for (auto& t : threads) t.join();
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  std::printf("Validate, %d concurrent callers, 2 workers, %zu calls: p50 %.0f us, p99 %.0f us, %.0f calls/s\n",
              callers, all.size(), all[all.size() / 2], all[all.size() * 99 / 100], all.size() / seconds);
  return 0;
}
