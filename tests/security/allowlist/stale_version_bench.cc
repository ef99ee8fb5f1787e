// stale_version_bench: what clients that keep sending a stale "|version" cost everyone else.
//
// Issue 7 measured four clients sending a stale "|1" slowing every other caller's calls from
// 0.4 to 15 ms, because each stale call started a fresh worker (60 ms). Now a worker answers a
// stale name itself and looks at the files at most once a second per name and version.
//
//   bazel run -c opt //tests/security/allowlist:stale_version_bench
//
// Per run: a cnp-server with 2 workers; the latency of a normal one-document Map call alone,
// then while 4 other clients send current-version calls as fast as they can (the baseline:
// the same load), then while they send stale-version calls. Median of 3 runs; the figure that
// matters is the ratio of the last two.
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
  double busy_p50_us = 0, busy_p99_us = 0;  // while 4 clients send current-version calls
  double contended_p50_us = 0, contended_p99_us = 0;  // while they send a stale version
  double busy_calls_per_second = 0;
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

  // The same load twice: 4 clients calling the current version (the control), then 4
  // clients calling a stale one. What a stale call costs beyond a normal call shows as the
  // difference between the two.
  for (bool stale_load : {false, true}) {
    std::atomic<bool> stop{false};
    std::atomic<int64_t> calls{0};
    std::vector<std::thread> load;
    absl::Time start = absl::Now();
    for (int c = 0; c < kStaleClients; ++c) {
      load.emplace_back([&] {
        auto own = (*server)->Connect();
        // Bounded: stops with the measured calls, or after 50,000 calls per client at most.
        for (int i = 0; i < 50'000 && !stop; ++i) {
          auto reply = own->Map({stale_load ? "benchviews.town|1" : "benchviews.town|2"}, kDoc);
          bool as_expected = stale_load
                                 ? reply.status().code() == absl::StatusCode::kFailedPrecondition
                                 : reply.ok();
          if (!as_expected) {
            std::fprintf(stderr, "a load call went wrong: %s\n",
                         std::string(reply.status().message()).c_str());
            std::exit(1);
          }
          ++calls;
        }
      });
    }
    std::vector<double> measured = NormalCalls(*client);
    stop = true;
    for (std::thread& t : load) t.join();
    double rate = calls / absl::ToDoubleSeconds(absl::Now() - start);
    if (stale_load) {
      run.stale_calls_per_second = rate;
      run.contended_p50_us = Percentile(measured, 0.5);
      run.contended_p99_us = Percentile(measured, 0.99);
    } else {
      run.busy_calls_per_second = rate;
      run.busy_p50_us = Percentile(measured, 0.5);
      run.busy_p99_us = Percentile(measured, 0.99);
    }
  }
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
  double busy = Median(runs, &Run::busy_p50_us);
  double contended = Median(runs, &Run::contended_p50_us);
  std::printf("normal Map call, p50 / p99, median of %d runs of %d calls:\n", kRuns, kCalls);
  std::printf("  alone:                                    %7.0f / %7.0f us\n", alone,
              Median(runs, &Run::alone_p99_us));
  std::printf("  while %d clients send current calls:       %7.0f / %7.0f us  (%.0f calls/s)\n",
              kStaleClients, busy, Median(runs, &Run::busy_p99_us),
              Median(runs, &Run::busy_calls_per_second));
  std::printf("  while %d clients send a stale |1:          %7.0f / %7.0f us  (%.0f calls/s)\n",
              kStaleClients, contended, Median(runs, &Run::contended_p99_us),
              Median(runs, &Run::stale_calls_per_second));
  std::printf("  stale load vs the same load of current calls: %.2fx the p50\n", contended / busy);
  std::printf("  workers started per run (2 at start):     %7.0f\n",
              Median(runs, &Run::workers_started));
  return 0;
}
