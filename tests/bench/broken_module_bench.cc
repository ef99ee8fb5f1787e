// What a call naming a function whose module does not import costs, as a view build over it
// makes one per document: one map task with one document at a time, lockstep, through a real
// cnp-worker, this build against --baseline_worker (another build's cnp-worker, its runfiles
// next to it as `cp -rL bazel-bin/service/worker/cnp-worker{,.runfiles}` leaves them), their
// runs alternating, the median of --runs. Two cases:
//   syntax error  a module (a hundred small functions, then a line that does not compile) that
//                 was never imported
//   broken edit   an imported module edited with a bumped @version and a top-level exception,
//                 the new version asked for
// and a working function as the control.
//
//   bazel run -c opt //tests/bench:broken_module_bench -- --baseline_worker=/path/to/cnp-worker
//       [--docs=N] [--runs=N]
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/support/worker_process.h"

namespace {

using ::cnp::worker::testing::MapTask;
using ::cnp::worker::testing::Reply;
using ::cnp::worker::testing::Task;
using ::cnp::worker::testing::WorkerProcess;

std::string Flag(int argc, char** argv, absl::string_view name, std::string fallback) {
  for (int i = 1; i < argc; ++i) {
    if (absl::StartsWith(argv[i], absl::StrCat(name, "="))) return argv[i] + name.size() + 1;
  }
  return fallback;
}

std::string FreshDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/broken-module-bench-XXXXXX");
  if (::mkdtemp(dir.data()) == nullptr) return "";
  ::chmod(dir.c_str(), 0755);
  return dir;
}

std::string ManyFunctions() {
  std::string text = "from couch_named_python import version\n\n";
  for (int i = 0; i < 100; ++i) {
    absl::StrAppend(&text, "def view_", i, "(doc):\n    if doc.get('type') == 'kind", i,
                    "':\n        yield doc.get('name'), ", i, "\n\n");
  }
  return text;
}

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

struct Case {
  const char* label;
  // Writes the modules into `dir` and readies the worker; returns the function to call.
  std::function<std::string(const std::string& dir, WorkerProcess& worker)> prepare;
  bool fails;  // whether each call is meant to fail
};

// Microseconds per call over `docs` one-document map tasks; negative on a surprise.
double PerCall(const Case& c, const std::string& binary, int docs) {
  std::string dir = FreshDir();
  // The modules are there before the worker starts, as in a real deployment.
  Write(dir + "/benchviews.py", ManyFunctions() + "def ok(doc):\n    yield doc['_id'], 1\n");
  auto worker = WorkerProcess::Start({"--python-path=" + dir}, {}, binary);
  if (!worker.ok()) {
    std::fprintf(stderr, "starting %s: %s\n", binary.empty() ? "cnp-worker" : binary.c_str(),
                 std::string(worker.status().message()).c_str());
    return -1;
  }
  std::string function = c.prepare(dir, **worker);
  Task task = MapTask({function}, {R"({"_id":"doc","type":"kind7","name":"n"})"});
  auto begin = std::chrono::steady_clock::now();
  for (int i = 0; i < docs; ++i) {
    Reply reply = (*worker)->Call(task);
    if (reply.has_failure() != c.fails) {
      std::fprintf(stderr, "%s: unexpected reply %s\n", c.label, reply.DebugString().c_str());
      return -1;
    }
  }
  auto end = std::chrono::steady_clock::now();
  (*worker)->CloseAndWait();
  return std::chrono::duration<double, std::micro>(end - begin).count() / docs;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 3, docs = 10000;
  if (!absl::SimpleAtoi(Flag(argc, argv, "--runs", "3"), &runs) || runs < 1 || runs > 50 ||
      !absl::SimpleAtoi(Flag(argc, argv, "--docs", "10000"), &docs) || docs < 1 ||
      docs > 1000000) {
    std::fprintf(stderr, "--runs: 1 to 50; --docs: 1 to 1000000\n");
    return 2;
  }
  const std::string baseline = Flag(argc, argv, "--baseline_worker", "");
  const std::vector<Case> cases = {
      {"syntax error",
       [](const std::string& dir, WorkerProcess&) {
         Write(dir + "/brokenviews.py", ManyFunctions() + "def broken(doc:\n    yield 1\n");
         return std::string("brokenviews.view_7");
       },
       true},
      {"broken edit",
       [](const std::string& dir, WorkerProcess& worker) {
         Write(dir + "/editedviews.py",
               ManyFunctions() + "@version(1)\ndef f(doc):\n    yield 'old', 1\n");
         worker.Call(MapTask({"editedviews.f|1"}, {"{}"}));
         Write(dir + "/editedviews.py", ManyFunctions() +
                                            "@version(2)\ndef f(doc):\n    yield 'new', 2\n"
                                            "raise RuntimeError('half-way through an edit')\n");
         return std::string("editedviews.f|2");
       },
       true},
      {"control (works)",
       [](const std::string&, WorkerProcess&) { return std::string("benchviews.ok"); }, false},
  };
  std::printf("%d one-document map tasks per run, lockstep, median of %d runs\n", docs, runs);
  for (const Case& c : cases) {
    std::vector<double> ours, theirs;
    for (int run = 0; run < runs; ++run) {
      double us = PerCall(c, "", docs);
      if (us < 0) return 1;
      ours.push_back(us);
      if (baseline.empty()) continue;
      us = PerCall(c, baseline, docs);
      if (us < 0) return 1;
      theirs.push_back(us);
    }
    if (baseline.empty()) {
      std::printf("%-16s this build %.1f us/call\n", c.label, Median(ours));
    } else {
      std::printf("%-16s this build %.1f us/call, baseline %.1f us/call: baseline / this build = "
                  "%.1fx\n",
                  c.label, Median(ours), Median(theirs), Median(theirs) / Median(ours));
    }
  }
  return 0;
}
