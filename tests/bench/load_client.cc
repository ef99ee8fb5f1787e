// load_bench's load: --clients concurrent clients, each with its own connection (a channel of
// its own, as separate services or CouchDB nodes would have), calling as fast as answers come
// for --duration_ms after one warm-up call each. Prints one JSON line: calls, errors, calls/s
// and the latency percentiles.
//
//   map       Map calls of --docs documents (scalefns.triple)
//   validate  Validate calls of one document (scalefns.check)
//   session   a Session stream per client (what a remote cnp-adapter sends): reset, add_fun,
//             then map_doc lines in lockstep, each one call
//
// Channels carry the client library's target parsing and service config (round_robin, the
// retry policy), so a list of replicas works as it does for cnp.
#include <algorithm>
#include <atomic>
#include <barrier>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/lib/channel_target.h"
#include "client/lib/service_config.h"
#include "cnp/v1/functions.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, target, "", "the service");
ABSL_FLAG(std::string, kind, "map", "map, validate or session");
ABSL_FLAG(int, clients, 1, "concurrent clients, each with its own connection");
ABSL_FLAG(int, duration_ms, 2000, "how long to measure");
ABSL_FLAG(int, docs, 100, "documents per Map call");
ABSL_FLAG(int, stream_margin_ms, 60000,
          "a Session stream's deadline is this long past --duration_ms: a server that never "
          "answers ends the run with errors instead of hanging it");

namespace cnp::bench {
namespace {

struct ClientResult {
  std::vector<int64_t> latencies_ns;
  int64_t errors = 0;
  std::string first_error;
};

std::shared_ptr<grpc::Channel> OwnChannel(const std::string& uri, int client, bool replicas) {
  grpc::ChannelArguments args;
  args.SetServiceConfigJSON(
      client::ClientServiceConfig(client::RetryPolicy::kIdempotentCalls, replicas));
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
  args.SetInt("cnp.load_bench_client", client);
  args.SetMaxReceiveMessageSize(-1);
  return grpc::CreateCustomChannel(uri, grpc::InsecureChannelCredentials(), args);
}

// One client's calls; `call` returns false on an error (its status in `error`).
class Caller {
 public:
  virtual ~Caller() = default;
  virtual bool Call(std::string& error) = 0;
};

class MapCaller final : public Caller {
 public:
  MapCaller(std::shared_ptr<grpc::Channel> channel, int client)
      : stub_(v1::Functions::NewStub(channel)) {
    request_.add_functions("scalefns.triple");
    for (int j = 0; j < absl::GetFlag(FLAGS_docs); ++j) {
      request_.add_docs(absl::StrFormat(R"({"_id":"c%d-%d","n":%d,"town":"Oslo"})", client, j, j));
    }
  }
  bool Call(std::string& error) override {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::MapResponse response;
    grpc::Status status = stub_->Map(&context, request_, &response);
    if (!status.ok()) error = status.error_message();
    else if (response.results_size() != request_.docs_size()) error = "missing results";
    return status.ok() && error.empty();
  }

 private:
  std::unique_ptr<v1::Functions::Stub> stub_;
  v1::MapRequest request_;
};

class ValidateCaller final : public Caller {
 public:
  ValidateCaller(std::shared_ptr<grpc::Channel> channel, int client)
      : stub_(v1::Functions::NewStub(channel)) {
    request_.set_function("scalefns.check");
    request_.set_new_doc(absl::StrFormat(R"({"_id":"c%d","n":%d})", client, 5 * client + 1));
  }
  bool Call(std::string& error) override {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::ValidateResponse response;
    grpc::Status status = stub_->Validate(&context, request_, &response);
    if (!status.ok()) error = status.error_message();
    else if (response.outcome() != v1::ValidateResponse::OK) error = response.ShortDebugString();
    return status.ok() && error.empty();
  }

 private:
  std::unique_ptr<v1::Functions::Stub> stub_;
  v1::ValidateRequest request_;
};

class SessionCaller final : public Caller {
 public:
  // The stream lives for the whole run: its deadline (`lifetime`: the run's length plus a
  // margin) ends a stream the server never answers with an error instead of hanging the run.
  SessionCaller(std::shared_ptr<grpc::Channel> channel, int client, absl::Duration lifetime)
      : stub_(v1::Functions::NewStub(channel)),
        context_(DeadlineContext(lifetime)),
        stream_(stub_->Session(context_.get())),
        doc_(absl::StrFormat(R"(["map_doc",{"_id":"c%d","n":%d,"town":"Oslo"}])", client, client)) {
    input_.set_line(R"(["reset",{"reduce_limit":true,"timeout":60000}])");
    ok_ = stream_->Write(input_);
    input_.set_line(R"(["add_fun","scalefns.triple"])");
    ok_ = ok_ && stream_->Write(input_) && stream_->Read(&output_) && output_.lines_size() == 1 &&
          output_.lines(0) == "true";
    input_.set_line(doc_);
  }
  ~SessionCaller() override {
    stream_->WritesDone();
    stream_->Finish().IgnoreError();
  }
  bool Call(std::string& error) override {
    if (!ok_ || !stream_->Write(input_) || !stream_->Read(&output_)) {
      ok_ = false;
      error = "the session stream broke";
      return false;
    }
    if (output_.lines_size() != 1 || output_.lines(0).rfind("[[[", 0) != 0) {
      error = output_.ShortDebugString();
      return false;
    }
    return true;
  }

 private:
  static std::unique_ptr<grpc::ClientContext> DeadlineContext(absl::Duration timeout) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return context;
  }

  std::unique_ptr<v1::Functions::Stub> stub_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::SessionInput, v1::SessionOutput>> stream_;
  std::string doc_;
  v1::SessionInput input_;
  v1::SessionOutput output_;
  bool ok_ = false;
};

std::unique_ptr<Caller> MakeCaller(const std::string& kind,
                                   std::shared_ptr<grpc::Channel> channel, int client,
                                   absl::Duration stream_lifetime) {
  if (kind == "validate") return std::make_unique<ValidateCaller>(channel, client);
  if (kind == "session") return std::make_unique<SessionCaller>(channel, client, stream_lifetime);
  return std::make_unique<MapCaller>(channel, client);
}

int64_t Percentile(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t index = static_cast<size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(index, sorted.size() - 1)];
}

int Run() {
  const std::string kind = absl::GetFlag(FLAGS_kind);
  if (kind != "map" && kind != "validate" && kind != "session") {
    std::cerr << "load_client: --kind must be map, validate or session" << std::endl;
    return 2;
  }
  const std::string target = absl::GetFlag(FLAGS_target);
  absl::StatusOr<std::string> uri = client::ChannelTargetUri(target);
  if (!uri.ok()) {
    std::cerr << "load_client: " << uri.status() << std::endl;
    return 2;
  }
  const int clients = absl::GetFlag(FLAGS_clients);
  std::vector<ClientResult> results(clients);
  std::barrier ready(clients + 1);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      ClientResult& result = results[c];
      std::unique_ptr<Caller> caller =
          MakeCaller(kind, OwnChannel(*uri, c, client::NamesReplicas(target)), c,
                     absl::Milliseconds(absl::GetFlag(FLAGS_duration_ms) +
                                        absl::GetFlag(FLAGS_stream_margin_ms)));
      std::string error;
      caller->Call(error);  // warm-up: connection, imports, first-call costs
      ready.arrive_and_wait();
      result.latencies_ns.reserve(1 << 14);
      while (!stop.load(std::memory_order_relaxed)) {
        error.clear();
        const absl::Time start = absl::Now();
        const bool ok = caller->Call(error);
        const int64_t ns = absl::ToInt64Nanoseconds(absl::Now() - start);
        if (ok) {
          result.latencies_ns.push_back(ns);
        } else if (result.errors++ == 0) {
          result.first_error = error;
        }
      }
    });
  }
  ready.arrive_and_wait();
  const absl::Time start = absl::Now();
  std::this_thread::sleep_for(std::chrono::milliseconds(absl::GetFlag(FLAGS_duration_ms)));
  stop = true;
  for (std::thread& t : threads) t.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  std::vector<int64_t> all;
  int64_t errors = 0;
  std::string first_error;
  for (const ClientResult& r : results) {
    all.insert(all.end(), r.latencies_ns.begin(), r.latencies_ns.end());
    errors += r.errors;
    if (first_error.empty()) first_error = r.first_error;
  }
  std::sort(all.begin(), all.end());
  std::cout << absl::StrFormat(
                   R"({"kind":"%s","clients":%d,"calls":%d,"errors":%d,"seconds":%.3f,)"
                   R"("per_second":%.1f,"p50_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,)"
                   R"("first_error":"%s"})",
                   kind, clients, all.size(), errors, seconds, all.size() / seconds,
                   Percentile(all, 0.50) / 1e3, Percentile(all, 0.99) / 1e3,
                   Percentile(all, 0.999) / 1e3, absl::CHexEscape(first_error))
            << std::endl;
  return 0;
}

}  // namespace
}  // namespace cnp::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return cnp::bench::Run();
}
