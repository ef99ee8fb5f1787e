// The scale-out test's client: batch Map (100 documents a call) and Validate calls through the
// client library (client::Client, with its retry policy), a few at a time, each result checked
// against the value computed here from the request (scalefns.triple: key 3n+1, value [replica,
// id]; scalefns.check: a multiple of 5 is forbidden). It never retries anything itself.
//
// Prints one JSON line per call ({"call","kind","outcome","replica","detail"}; outcome is ok,
// error, wrong or empty) and a last summary line; exits 0 once every call has been made.
#include <algorithm>
#include <atomic>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/lib/cnp_client.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

ABSL_FLAG(std::string, target, "", "the service: nginx's address, or a list of replicas");
ABSL_FLAG(int, map_calls, 200, "Map calls to make");
ABSL_FLAG(int, docs_per_call, 100, "documents in each Map call");
ABSL_FLAG(int, validate_calls, 400, "Validate calls to make");
ABSL_FLAG(int, concurrency, 8, "calls in flight at once (one thread each)");
ABSL_FLAG(std::string, park_dir, "",
          "if set, the calls after the first --park-after ask to park (scalefns parks the first "
          "of each kind that reaches r1)");
ABSL_FLAG(int, park_after, 0, "calls made before any asks to park");
ABSL_FLAG(bool, retry, true, "the client library's retry policy (false: gRPC retries nothing)");
ABSL_FLAG(int, timeout_s, 60, "deadline of each call");
ABSL_FLAG(bool, crash, false,
          "instead: one Map call of scalefns.crashes (its worker exits); print its status");

namespace cnp::scaleout {
namespace {

struct Outcome {
  std::string call;
  std::string kind;
  std::string outcome;  // ok, error, wrong, empty
  std::string replica;
  std::string detail;
};

std::string Json(const Outcome& o) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  for (auto [key, value] : {std::pair{"call", &o.call}, {"kind", &o.kind},
                            {"outcome", &o.outcome}, {"replica", &o.replica},
                            {"detail", &o.detail}}) {
    w.Key(key);
    w.String(value->c_str(), value->size());
  }
  w.EndObject();
  return buffer.GetString();
}

std::string Doc(const std::string& id, int64_t n, bool park, const std::string& park_kind) {
  std::string doc = absl::StrFormat(R"({"_id":"%s","n":%d)", id, n);
  if (park) {
    absl::StrAppendFormat(&doc, R"(,"park":"%s","park_kind":"%s")",
                          absl::GetFlag(FLAGS_park_dir), park_kind);
  }
  return doc + "}";
}

Outcome RunMap(client::Client& client, int index, bool park) {
  const int per_call = absl::GetFlag(FLAGS_docs_per_call);
  Outcome o{.call = absl::StrCat("m", index), .kind = "map"};
  std::vector<std::string> docs;
  for (int j = 0; j < per_call; ++j) {
    docs.push_back(Doc(absl::StrCat("m", index, "-", j), int64_t{index} * per_call + j,
                       j == 0 && park, "map"));
  }
  absl::StatusOr<v1::MapResponse> response =
      client.Map({"scalefns.triple"}, docs, absl::Seconds(absl::GetFlag(FLAGS_timeout_s)));
  if (!response.ok()) {
    o.outcome = "error";
    o.detail = response.status().ToString();
    return o;
  }
  if (response->results_size() == 0) {
    o.outcome = "empty";
    o.detail = "no results";
    return o;
  }
  if (response->results_size() != per_call) {
    o.outcome = "wrong";
    o.detail = absl::StrCat(response->results_size(), " results for ", per_call, " documents");
    return o;
  }
  for (int j = 0; j < per_call; ++j) {
    const v1::MapResult& result = response->results(j);
    const std::string id = absl::StrCat("m", index, "-", j);
    const int64_t key = (int64_t{index} * per_call + j) * 3 + 1;
    rapidjson::Document rows;
    rows.Parse(result.rows().data(), result.rows().size());
    // [[ [key, [replica, id]] ]]: one function, one emitted pair.
    if (rows.HasParseError() || !rows.IsArray() || rows.Size() != 1 || !rows[0].IsArray()) {
      o.outcome = "wrong";
      o.detail = absl::StrCat(id, ": rows ", result.rows());
      return o;
    }
    if (rows[0].Size() == 0) {
      o.outcome = "empty";
      o.detail = absl::StrCat(id, ": no row (", result.errors_size(), " errors)");
      return o;
    }
    const rapidjson::Value& pair = rows[0][0];
    if (rows[0].Size() != 1 || !pair.IsArray() || pair.Size() != 2 || !pair[0].IsInt64() ||
        pair[0].GetInt64() != key || !pair[1].IsArray() || pair[1].Size() != 2 ||
        !pair[1][0].IsString() || !pair[1][1].IsString() || pair[1][1].GetString() != id ||
        result.errors_size() != 0) {
      o.outcome = "wrong";
      o.detail = absl::StrCat(id, ": rows ", result.rows(), ", expected key ", key);
      return o;
    }
    const std::string replica = pair[1][0].GetString();
    if (o.replica.empty()) o.replica = replica;
    if (o.replica != replica) {
      o.outcome = "wrong";
      o.detail = absl::StrCat("one call answered by ", o.replica, " and ", replica);
      return o;
    }
  }
  o.outcome = "ok";
  return o;
}

Outcome RunValidate(client::Client& client, int index, bool park) {
  Outcome o{.call = absl::StrCat("v", index), .kind = "validate"};
  v1::ValidateRequest request;
  request.set_function("scalefns.check");
  request.set_new_doc(Doc(o.call, index, park, "validate"));
  absl::StatusOr<v1::ValidateResponse> response =
      client.Validate(request, absl::Seconds(absl::GetFlag(FLAGS_timeout_s)));
  if (!response.ok()) {
    o.outcome = "error";
    o.detail = response.status().ToString();
    return o;
  }
  if (response->outcome() == v1::ValidateResponse::OUTCOME_UNSPECIFIED ||
      response->logs_size() == 0) {
    o.outcome = "empty";
    o.detail = response->ShortDebugString();
    return o;
  }
  const bool forbidden = index % 5 == 0;
  const std::string message = absl::StrFormat("n=%d is a multiple of 5", index);
  if (forbidden ? (response->outcome() != v1::ValidateResponse::FORBIDDEN ||
                   response->message() != message)
                : response->outcome() != v1::ValidateResponse::OK) {
    o.outcome = "wrong";
    o.detail = response->ShortDebugString();
    return o;
  }
  for (const std::string& log : response->logs()) {
    if (size_t at = log.find("served by "); at != std::string::npos) {
      o.replica = log.substr(at + 10, 2);
    }
  }
  o.outcome = o.replica.empty() ? "wrong" : "ok";
  if (o.replica.empty()) o.detail = response->ShortDebugString();
  return o;
}

int Run() {
  absl::StatusOr<std::unique_ptr<client::Client>> client = client::Client::Connect(
      absl::GetFlag(FLAGS_target), client::ChannelSecurity{}, absl::Seconds(10),
      absl::GetFlag(FLAGS_retry) ? client::RetryPolicy::kIdempotentCalls
                                 : client::RetryPolicy::kNone);
  if (!client.ok()) {
    std::cerr << "scaleout_client: " << client.status() << std::endl;
    return 1;
  }
  if (absl::GetFlag(FLAGS_crash)) {
    absl::StatusOr<v1::MapResponse> crashed =
        (*client)->Map({"scalefns.crashes"}, {R"({"_id":"boom"})"});
    std::cout << crashed.status() << std::endl;
    return 0;
  }
  // Map and Validate calls mixed in a shuffled order, so both kinds are in flight when a
  // replica dies, and a balancer's strict alternation does not send every call of one kind to
  // the same replica (as a fixed m, v, m, v order would).
  std::vector<std::pair<bool, int>> jobs;
  for (int i = 0; i < absl::GetFlag(FLAGS_map_calls); ++i) jobs.emplace_back(true, i);
  for (int i = 0; i < absl::GetFlag(FLAGS_validate_calls); ++i) jobs.emplace_back(false, i);
  std::shuffle(jobs.begin(), jobs.end(), std::mt19937(20261130));
  std::atomic<size_t> next{0};
  std::mutex out_mu;
  std::map<std::string, int> counts;
  std::vector<std::thread> threads;
  for (int t = 0; t < absl::GetFlag(FLAGS_concurrency); ++t) {
    threads.emplace_back([&] {
      for (size_t j = next++; j < jobs.size(); j = next++) {
        const bool park = !absl::GetFlag(FLAGS_park_dir).empty() &&
                          j >= static_cast<size_t>(absl::GetFlag(FLAGS_park_after));
        Outcome o = jobs[j].first ? RunMap(**client, jobs[j].second, park)
                                  : RunValidate(**client, jobs[j].second, park);
        std::lock_guard lock(out_mu);
        ++counts[o.outcome];
        if (o.outcome == "ok") ++counts["by_" + o.replica];
        std::cout << Json(o) << "\n" << std::flush;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::cout << R"({"summary":{)";
  bool first = true;
  for (const auto& [name, count] : counts) {
    std::cout << (first ? "" : ",") << '"' << name << "\":" << count;
    first = false;
  }
  std::cout << "}}" << std::endl;
  return 0;
}

}  // namespace
}  // namespace cnp::scaleout

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return cnp::scaleout::Run();
}
