// stale_version_bench: what clients that keep sending a stale "|version" cost everyone else.
//
// Issue 7 measured four clients sending a stale "|1" slowing every other caller's calls from
// 0.4 to 15 ms, because each stale call started a fresh worker (60 ms). Now a worker answers a
// stale name itself and looks at the files at most once a second per name and version.
//
//   bazel run -c opt //tests/security/allowlist:stale_version_bench
//
// Per run: a cnp-server with 2 workers; the latency of a normal one-document Map call alone
// (the baseline), then the same calls while 4 other clients send stale-version calls as fast
// as they can. Median of 3 runs; the figure that matters is the ratio.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/support/server_process.h"

namespace {

using cnp::testing::ServerProcess;

constexpr int kCalls = 2000;
constexpr int kStaleClients = 4;
constexpr int kRuns = 3;
const std::vector<std::string> kDoc = {R"({"_id":"a","town":"Oslo"})"};

struct Run {
  double alone_p50_us = 0, alone_p99_us = 0;
  double contended_p50_us = 0, contended_p99_us = 0;
  double stale_calls_per_second = 0;
  double workers_started = 0;
};

double Percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(p * values.size()))];
}

// Latencies of kCalls sequential normal calls, in microseconds.
std::vector<double> NormalCalls(cnp::client::Client& client) {
  std::vector<double> latencies;
  for (int i = 0; i < kCalls; ++i) {
    absl::Time start = absl::Now();
    auto reply = client.Map({"benchviews.town|2"}, kDoc);
    latencies.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
    if (!reply.ok()) {
      std::fprintf(stderr, "a normal call failed: %s\n", std::string(reply.status().message()).c_str());
      std::exit(1);
    }
  }
  return latencies;
}

Run Measure(const std::string& dir) {
  auto server = ServerProcess::Start({"--python-path=" + dir, "--workers=2"});
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", std::string(server.status().message()).c_str());
    std::exit(1);
  }
  auto client = (*server)->Connect();
  for (int i = 0; i < 100; ++i) (void)client->Map({"benchviews.town|2"}, kDoc);  // warm up

  Run run;
  std::vector<double> alone = NormalCalls(*client);
  run.alone_p50_us = Percentile(alone, 0.5);
  run.alone_p99_us = Percentile(alone, 0.99);

  std::atomic<bool> stop{false};
  std::atomic<int64_t> stale_calls{0};
  std::vector<std::thread> stale;
  absl::Time start = absl::Now();
  for (int c = 0; c < kStaleClients; ++c) {
    stale.emplace_back([&] {
      auto own = (*server)->Connect();
      // Bounded: stops with the measured calls, or after 200,000 calls at most.
      for (int i = 0; i < 50'000 && !stop; ++i) {
        auto reply = own->Map({"benchviews.town|1"}, kDoc);
        if (reply.status().code() != absl::StatusCode::kFailedPrecondition) {
          std::fprintf(stderr, "a stale call did not fail as stale: %s\n",
                       std::string(reply.status().message()).c_str());
          std::exit(1);
        }
        ++stale_calls;
      }
    });
  }
  std::vector<double> contended = NormalCalls(*client);
  stop = true;
  for (std::thread& t : stale) t.join();
  run.stale_calls_per_second = stale_calls / absl::ToDoubleSeconds(absl::Now() - start);
  run.contended_p50_us = Percentile(contended, 0.5);
  run.contended_p99_us = Percentile(contended, 0.99);
  for (absl::string_view line : absl::StrSplit((*server)->Log(), '\n')) {
    run.workers_started +=
        absl::StrContains(line, "] worker ") && absl::StrContains(line, " started (pid ");
  }
  return run;
}

double Median(std::vector<Run>& runs, double Run::*field) {
  std::vector<double> values;
  for (const Run& r : runs) values.push_back(r.*field);
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main() {
  std::string dir = cnp::testing::MakeTempDir("stale-bench");
  std::ofstream(dir + "/benchviews.py") << "from couch_named_python import version\n\n"
                                           "@version(2)\ndef town(doc):\n"
                                           "    yield doc['town'], 1\n";
  std::vector<Run> runs;
  for (int i = 0; i < kRuns; ++i) runs.push_back(Measure(dir));
  double alone = Median(runs, &Run::alone_p50_us);
  double contended = Median(runs, &Run::contended_p50_us);
  std::printf("normal Map call, p50 / p99, median of %d runs of %d calls:\n", kRuns, kCalls);
  std::printf("  alone:                                  %7.0f / %7.0f us\n", alone,
              Median(runs, &Run::alone_p99_us));
  std::printf("  while %d clients send a stale |1:        %7.0f / %7.0f us   (%.2fx the p50 alone)\n",
              kStaleClients, contended, Median(runs, &Run::contended_p99_us), contended / alone);
  std::printf("  stale calls answered:                   %7.0f /s\n",
              Median(runs, &Run::stale_calls_per_second));
  std::printf("  workers started per run (2 at start):   %7.0f\n",
              Median(runs, &Run::workers_started));
  return 0;
}
