// One map_doc at a time through a real cnp-worker, the way CouchDB drives indexing: one Task
// with one document, wait for its Reply, next. Reports wall µs per round trip and the
// worker's CPU per document (user + sys, from the child's rusage after it exits).
//   bazel run -c opt //tests/bench:worker_roundtrip_bench [-- --docs=N]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tests/support/worker_process.h"

namespace {

using cnp::worker::testing::MapTask;
using cnp::worker::testing::Reply;
using cnp::worker::testing::Task;
using cnp::worker::testing::WorkerProcess;
using Clock = std::chrono::steady_clock;

double CpuMicros(const rusage& usage) {
  return usage.ru_utime.tv_sec * 1e6 + usage.ru_utime.tv_usec + usage.ru_stime.tv_sec * 1e6 +
         usage.ru_stime.tv_usec;
}

int DocsFlag(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--docs=", 7) == 0) return std::clamp(std::atoi(argv[i] + 7), 1, 1000000);
  }
  return 50000;
}

}  // namespace

int main(int argc, char** argv) {
  const int docs = DocsFlag(argc, argv);
  std::unique_ptr<WorkerProcess> worker = WorkerProcess::StartWithFunctions();
  if (worker == nullptr) return 1;

  std::vector<double> micros;
  micros.reserve(docs);
  const char* towns[] = {"Oslo", "Lima", "Kyoto", "Paris"};
  Task task = MapTask({"worker_views.town"}, {""});
  Clock::time_point begin = Clock::now();
  for (int i = 0; i < docs; ++i) {
    task.mutable_map()->set_docs(0, absl::StrFormat(
        R"({"_id":"doc-%06d","_rev":"1-abc","town":"%s","n":%d})", i, towns[i % 4], i));
    Clock::time_point start = Clock::now();
    if (!worker->Send(task).ok()) return 1;
    absl::StatusOr<Reply> reply = worker->Receive();
    if (!reply.ok() || !reply->has_map()) {
      std::fprintf(stderr, "bad reply: %s\n", reply.ok() ? reply->DebugString().c_str()
                                                        : reply.status().ToString().c_str());
      return 1;
    }
    micros.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  }
  double wall = std::chrono::duration<double, std::micro>(Clock::now() - begin).count();
  if (worker->CloseAndWait() != 0) return 1;
  rusage children{}, self{};
  ::getrusage(RUSAGE_CHILDREN, &children);
  ::getrusage(RUSAGE_SELF, &self);

  std::sort(micros.begin(), micros.end());
  std::printf("documents: %d, one per task, lockstep over a socketpair\n", docs);
  std::printf("round trip: median %.1f us, p99 %.1f us, mean %.1f us (wall)\n", micros[docs / 2],
              micros[docs * 99 / 100], wall / docs);
  std::printf("worker CPU per doc: %.2f us (user+sys, includes its start-up)\n",
              CpuMicros(children) / docs);
  std::printf("driver CPU per doc: %.2f us\n", CpuMicros(self) / docs);
  return 0;
}
