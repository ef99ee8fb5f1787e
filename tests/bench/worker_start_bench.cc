// How long a cnp-worker takes from its start to its first answer: start the process, start
// Python, import the function's module and the standard-library modules it imports (each read
// from its bytecode cache, which code_file_guard checks), and answer one map task. With
// --baseline_worker (another build's cnp-worker, its runfiles next to it as
// `cp -rL bazel-bin/service/worker/cnp-worker{,.runfiles}` leaves them), starts of the two builds
// alternate and the medians are printed side by side with their ratio.
//
//   bazel run -c opt //tests/bench:worker_start_bench -- [--runs=N]
//       [--baseline_worker=/path/to/cnp-worker]
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/support/worker_process.h"

namespace {

using ::cnp::worker::testing::MapTask;
using ::cnp::worker::testing::Reply;
using ::cnp::worker::testing::WorkerProcess;

std::string Flag(int argc, char** argv, absl::string_view name, std::string fallback) {
  for (int i = 1; i < argc; ++i) {
    if (absl::StartsWith(argv[i], absl::StrCat(name, "="))) return argv[i] + name.size() + 1;
  }
  return fallback;
}

// A module importing what a typical views module does, so the start reads a few dozen caches.
std::string WriteViews() {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/worker-start-bench-XXXXXX");
  if (::mkdtemp(dir.data()) == nullptr) return "";
  ::chmod(dir.c_str(), 0755);
  std::ofstream(dir + "/startviews.py")
      << "import collections, datetime, decimal, fractions, hashlib, json, re, statistics\n"
         "import string, textwrap, uuid, urllib.parse\n"
         "def by_town(doc):\n"
         "    yield doc.get('town'), 1\n";
  return dir;
}

// Milliseconds from spawning the worker to its first map answer; negative on failure.
double OneStart(const std::string& dir, const std::string& binary) {
  auto begin = std::chrono::steady_clock::now();
  auto worker = WorkerProcess::Start({"--python-path=" + dir}, {}, binary);
  if (!worker.ok()) {
    std::fprintf(stderr, "starting %s: %s\n", binary.empty() ? "cnp-worker" : binary.c_str(),
                 std::string(worker.status().message()).c_str());
    return -1;
  }
  Reply reply = (*worker)->Call(MapTask({"startviews.by_town"}, {R"({"town":"Oslo"})"}));
  auto end = std::chrono::steady_clock::now();
  if (!reply.has_map()) {
    std::fprintf(stderr, "%s\n", reply.DebugString().c_str());
    return -1;
  }
  (*worker)->CloseAndWait();
  return std::chrono::duration<double, std::milli>(end - begin).count();
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 15;
  if (!absl::SimpleAtoi(Flag(argc, argv, "--runs", "15"), &runs) || runs < 3 || runs > 200) {
    std::fprintf(stderr, "--runs: a whole number from 3 to 200\n");
    return 2;
  }
  const std::string baseline = Flag(argc, argv, "--baseline_worker", "");
  const std::string dir = WriteViews();
  if (dir.empty()) return 1;
  std::vector<double> ours, theirs;
  OneStart(dir, "");  // warm the page cache for both
  if (!baseline.empty()) OneStart(dir, baseline);
  for (int i = 0; i < runs; ++i) {
    double ms = OneStart(dir, "");
    if (ms < 0) return 1;
    ours.push_back(ms);
    if (baseline.empty()) continue;
    ms = OneStart(dir, baseline);
    if (ms < 0) return 1;
    theirs.push_back(ms);
  }
  std::printf("worker start to first map answer, median of %d: this build %.1f ms\n", runs,
              Median(ours));
  if (!baseline.empty()) {
    std::printf("--baseline_worker %.1f ms; this build / baseline = %.3f\n", Median(theirs),
                Median(ours) / Median(theirs));
  }
  return 0;
}
