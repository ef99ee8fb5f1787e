// The service-side protocol cost of one map_doc, without any I/O: QuerySession::Handle for a
// small document against a TaskRunner that answers at once with a fixed map result. This is the
// part of cnp-server's per-document time that service/couchdb adds (a benchmark, not a test).
//
//   bazel run -c opt //tests/bench:query_session_bench -- 1000000
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "service/couchdb/query_session.h"

namespace {

using cnp::pool::Reply;
using cnp::pool::Task;

// Answers every map task with the same one-row result, as a worker would.
class InstantRunner : public cnp::pool::TaskRunner {
 public:
  InstantRunner() {
    map_reply_.mutable_map()->add_results()->set_rows("[[[\"Oslo\",1]]]");
    resolve_reply_.mutable_resolve()->add_functions();
  }
  absl::StatusOr<Reply> Run(const Task& task, absl::Time) override {
    // A real runner serializes the task onto the worker socket; so does this one.
    serialized_.clear();
    task.SerializeToString(&serialized_);
    return task.has_map() ? map_reply_ : resolve_reply_;
  }
  absl::StatusOr<std::unique_ptr<cnp::pool::WorkerLease>> Lease(absl::Time) override {
    return absl::UnimplementedError("no lists here");
  }

 private:
  Reply map_reply_;
  Reply resolve_reply_;
  std::string serialized_;
};

}  // namespace

int main(int argc, char** argv) {
  const long docs = argc > 1 ? std::min(std::atol(argv[1]), 10'000'000L) : 1'000'000L;
  InstantRunner runner;
  cnp::couchdb::QuerySession session(runner);
  session.Handle(R"(["reset",{"reduce_limit":true,"timeout":5000}])");
  session.Handle(R"(["add_fun","fixture_fns.town_n|1"])");
  std::vector<std::string> lines;
  for (int i = 0; i < 1000; ++i) {
    lines.push_back(absl::StrCat(
        R"(["map_doc",{"_id":"doc-)", i,
        R"(","_rev":"1-2101244a50b598053422a529f25605d9","type":"person","town":"Oslo","n":)", i,
        "}]"));
  }
  size_t bytes = 0;
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < docs; ++i) {
    std::optional<cnp::v1::SessionOutput> out = session.Handle(lines[i % lines.size()]);
    bytes += out->lines(0).size();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("QuerySession map_doc (no I/O): %ld docs, %.3f us/doc (%zu reply bytes)\n", docs,
              seconds / docs * 1e6, bytes);
  return 0;
}
