// cnp-server's /metrics and its JSON log, end to end: a real server and workers, calls that
// succeed, raise on a document, and crash a worker; then a scrape over loopback with a plain
// socket, and the log parsed line by line.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"
#include "tests/support/docs.h"
#include "tests/support/metrics_scrape.h"
#include "tests/support/server_process.h"

namespace cnp {
namespace {

using ::cnp::testing::Doc;
using ::cnp::testing::Http;
using ::cnp::testing::MetricsPort;
using ::cnp::testing::Scrape;
using ::cnp::testing::ServerProcess;
using ::cnp::testing::Value;
using ::testing::HasSubstr;

TEST(MetricsEndpointTest, CountersMoveWithCallsErrorsAndCrashes) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2,
                                                  {"--metrics-listen=127.0.0.1:0"});
  ASSERT_NE(server, nullptr);
  const int port = MetricsPort(*server);
  ASSERT_GT(port, 0) << server->Log();
  ASSERT_TRUE(server->WaitForLog("worker 1 started", absl::Seconds(30)));
  ASSERT_TRUE(server->WaitForLog("worker 0 started", absl::Seconds(30)));

  const std::string before = Scrape(port);
  EXPECT_THAT(before, HasSubstr(" 200 OK\r\n"));
  EXPECT_THAT(before, HasSubstr("text/plain; version=0.0.4"));
  EXPECT_THAT(before, HasSubstr("# TYPE cnp_calls_total counter\n"));
  EXPECT_THAT(before, HasSubstr("# TYPE cnp_call_duration_seconds histogram\n"));
  EXPECT_EQ(Value(before, R"(cnp_worker_starts_total{pool="batch"})"), 2);
  EXPECT_EQ(Value(before, "cnp_queue_depth"), 0);
  EXPECT_EQ(Value(before, R"(cnp_sessions_active{kind="stream"})"), 0);
  EXPECT_EQ(Value(before, R"(cnp_calls_total{rpc="Map",code="0"})"), -1);
  // At 0 from the start, so that a dashboard's panel has data and rate() sees the first one
  // (an operator probe found "No data" until something was refused).
  for (const char* rpc : {"Map", "Validate", "Session", "Upload"}) {
    EXPECT_EQ(Value(before, absl::StrCat("cnp_call_memory_refusals_total{rpc=\"", rpc, "\"}")), 0)
        << rpc;
    EXPECT_EQ(Value(before, absl::StrCat("cnp_unread_answer_cancels_total{rpc=\"", rpc, "\"}")), 0)
        << rpc;
  }

  auto client = server->Connect();
  // picky raises on multiples of three: one document of two.
  auto mapped = client->Map({"svc_fns.picky"}, {Doc("a", 1), Doc("b", 3)});
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  v1::ValidateRequest validate;
  validate.set_function("svc_fns.guard|3");
  validate.set_new_doc(R"({"_id":"x"})");
  ASSERT_TRUE(client->Validate(validate).ok());
  auto crashed = client->Map({"svc_fns.exits"}, {Doc("c", 1)});
  EXPECT_EQ(crashed.status().code(), absl::StatusCode::kUnavailable);

  const std::string after = Scrape(port);
  EXPECT_EQ(Value(after, R"(cnp_calls_total{rpc="Map",code="0"})"), 1) << after;
  EXPECT_EQ(Value(after, R"(cnp_calls_total{rpc="Map",code="14"})"), 1) << after;
  EXPECT_EQ(Value(after, R"(cnp_calls_total{rpc="Validate",code="0"})"), 1) << after;
  EXPECT_EQ(Value(after, R"(cnp_call_duration_seconds_count{rpc="Map"})"), 2) << after;
  EXPECT_EQ(Value(after, R"(cnp_call_duration_seconds_bucket{rpc="Validate",le="+Inf"})"), 1);
  EXPECT_EQ(Value(after, R"(cnp_function_errors_total{function="svc_fns.picky"})"), 1) << after;
  EXPECT_EQ(Value(after, R"(cnp_worker_exits_total{cause="crash",pool="batch"})"), 1) << after;
}

// A call whose client's deadline passes is counted as what its client saw, DEADLINE_EXCEEDED
// (code 4), whichever the server notices first: its own deadline for the task, or gRPC's
// cancellation of the call when the client's deadline passes (counted as CANCELLED, code 1,
// before: a review saw it with `cnp map --timeout=1s`).
TEST(MetricsEndpointTest, ACallPastItsDeadlineIsCountedAsADeadline) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2,
                                                  {"--metrics-listen=127.0.0.1:0"});
  ASSERT_NE(server, nullptr);
  const int port = MetricsPort(*server);
  ASSERT_GT(port, 0) << server->Log();
  auto client = server->Connect();
  auto spun = client->Map({"svc_fns.spins"}, {Doc("s", 1)}, absl::Milliseconds(500));
  EXPECT_EQ(spun.status().code(), absl::StatusCode::kDeadlineExceeded) << spun.status();

  // The server counts the call once its coroutine has ended, a moment after the client gave up:
  // after its worker was killed for it (at its deadline, or as the call was cancelled), which
  // the log says first (WaitForLog: inotify). Then only the count is left, which no event
  // announces: scraped again at once until it is there (each scrape a whole HTTP exchange; the
  // count appears only once the server has counted the call), for 30 s at most.
  ASSERT_TRUE(server->WaitForLog("killing and replacing it", absl::Seconds(30))) << server->Log();
  const std::string series = R"(cnp_calls_total{rpc="Map",code="4"})";
  std::string scrape = Scrape(port);
  for (const absl::Time give_up = absl::Now() + absl::Seconds(30);
       Value(scrape, series) < 1 && absl::Now() < give_up; scrape = Scrape(port)) {
  }
  EXPECT_EQ(Value(scrape, series), 1) << scrape;
  EXPECT_EQ(Value(scrape, R"(cnp_calls_total{rpc="Map",code="1"})"), -1) << scrape;
}

TEST(MetricsEndpointTest, OnlyGetMetricsIsServed) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2,
                                                  {"--metrics-listen=127.0.0.1:0"});
  ASSERT_NE(server, nullptr);
  const int port = MetricsPort(*server);
  ASSERT_GT(port, 0);
  EXPECT_THAT(Http(port, "GET / HTTP/1.0\r\n\r\n"), HasSubstr(" 404 Not Found\r\n"));
  EXPECT_THAT(Http(port, "DELETE /metrics HTTP/1.0\r\n\r\n"), HasSubstr(" 405 Method Not Allowed\r\n"));
}

// Any local user can connect to the endpoint. A burst of connections that send a byte and hang
// up must neither write a log line each nor keep the endpoint from a scraper for longer than a
// scrape interval (Prometheus's default scrape timeout is 10 s; 30 s here for a loaded machine).
TEST(MetricsEndpointTest, ABurstOfBrokenConnectionsNeitherFloodsTheLogNorHoldsTheEndpoint) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2,
                                                  {"--metrics-listen=127.0.0.1:0"});
  ASSERT_NE(server, nullptr);
  const int port = MetricsPort(*server);
  ASSERT_GT(port, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  constexpr int kBroken = 200;
  for (int i = 0; i < kBroken; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    (void)!::write(fd, "G", 1);
    ::close(fd);
  }

  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const timeval limit{.tv_sec = 30, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string request = "GET /metrics HTTP/1.0\r\n\r\n";
  ASSERT_EQ(::write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string response;
  char buffer[65536];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0) response.append(buffer, n);
  ::close(fd);
  EXPECT_THAT(response, HasSubstr(" 200 OK\r\n")) << "no answer within 30 s after the burst";

  int lines = 0;
  for (absl::string_view line : absl::StrSplit(server->Log(), '\n')) {
    lines += absl::StrContains(line, "metrics endpoint (libmicrohttpd)");
  }
  EXPECT_LE(lines, 5) << server->Log();
}

// Security review: clients that each send a byte every second are never silent for the 3 s idle
// timeout, and 70 of them (more than the endpoint's 64 connection slots; any local user can
// connect) kept a scraper out for as long as they went on. Every connection now has a deadline
// from its start, silent or not: the scraper, queued behind them, is answered after it. A probe
// found 200 of them kept it out past Prometheus's 10 s scrape timeout behind a 5 s deadline
// (four rounds of 64); a connection without its request is now closed after a second.
TEST(MetricsEndpointTest, SlowClientsHoldingEverySlotKeepAScraperOutOnlyUntilTheirDeadline) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2,
                                                  {"--metrics-listen=127.0.0.1:0"});
  ASSERT_NE(server, nullptr);
  const int port = MetricsPort(*server);
  ASSERT_GT(port, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  constexpr int kSlow = 200;
  std::vector<int> slow;
  for (int i = 0; i < kSlow; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::send(fd, "G", 1, MSG_NOSIGNAL), 1);
    slow.push_back(fd);
  }
  // A byte a second on each: the pace of the attack, well inside the idle timeout.
  absl::Notification scraped;
  std::thread trickle([&] {
    while (!scraped.WaitForNotificationWithTimeout(absl::Seconds(1))) {
      for (int fd : slow) (void)::send(fd, "E", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
  });

  // Connected after them: the kernel queues it behind the slow ones the endpoint took.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const timeval limit{.tv_sec = 30, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  const absl::Time asked = absl::Now();
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string request = "GET /metrics HTTP/1.0\r\n\r\n";
  ASSERT_EQ(::write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string response;
  char buffer[65536];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0) response.append(buffer, n);
  const absl::Duration took = absl::Now() - asked;
  ::close(fd);
  scraped.Notify();
  trickle.join();
  for (int slow_fd : slow) ::close(slow_fd);
  EXPECT_THAT(response, HasSubstr(" 200 OK\r\n"))
      << "no answer within 30 s while slow clients held every connection";
  // Four rounds of the request's deadline and a sweep (5 s), and a loaded machine's slack;
  // behind 5 s deadlines it took 15 s.
  EXPECT_LT(took, absl::Seconds(10));
}

TEST(MetricsEndpointTest, ANonLoopbackAddressIsRefusedWithoutInsecure) {
  auto server = ServerProcess::Start(
      {"--python-path=" + testing::Runfile("tests/functions/server"), "--workers=1",
       "--metrics-listen=0.0.0.0:0"});
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr("not a loopback address"));
}

TEST(MetricsEndpointTest, JsonLogLinesParseAndNameTheFunctionDocumentAndPeer) {
  auto server =
      ServerProcess::StartWithFunctions({"tests/functions/server"}, 2, {"--log-format=json"});
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  auto mapped = client->Map({"svc_fns.picky"}, {Doc("a", 1), Doc("b", 3)});
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  ASSERT_TRUE(server->WaitForLog("function raised", absl::Seconds(10))) << server->Log();

  int server_lines = 0;
  bool found_error = false;
  for (absl::string_view line : absl::StrSplit(server->Log(), '\n', absl::SkipEmpty())) {
    // Workers share the server's stderr (Python's own output); the server's lines are JSON.
    EXPECT_THAT(std::string(line), ::testing::Not(HasSubstr("cnp-server[")));
    if (!absl::StartsWith(line, "{")) continue;
    rapidjson::Document json;
    json.Parse(line.data(), line.size());
    ASSERT_FALSE(json.HasParseError()) << line;
    ASSERT_TRUE(json.IsObject()) << line;
    ASSERT_TRUE(json.HasMember("ts") && json.HasMember("level") && json.HasMember("msg")) << line;
    ++server_lines;
    if (json.HasMember("function") &&
        std::string(json["function"].GetString()) == "svc_fns.picky") {
      found_error = true;
      EXPECT_STREQ(json["level"].GetString(), "WARN");
      ASSERT_TRUE(json.HasMember("doc_id")) << line;
      EXPECT_STREQ(json["doc_id"].GetString(), "b");
      ASSERT_TRUE(json.HasMember("rpc")) << line;
      EXPECT_STREQ(json["rpc"].GetString(), "Map");
      ASSERT_TRUE(json.HasMember("peer")) << line;
      EXPECT_THAT(json["peer"].GetString(), HasSubstr("unix:"));
      EXPECT_THAT(json["msg"].GetString(), HasSubstr("ValueError: no multiples of three: 3"));
      // Where the function raised, in the message and with its whole traceback.
      EXPECT_THAT(json["msg"].GetString(), HasSubstr("(svc_fns.py:"));
      ASSERT_TRUE(json.HasMember("traceback")) << line;
      EXPECT_THAT(json["traceback"].GetString(), HasSubstr("svc_fns.py\", line "));
      EXPECT_THAT(json["traceback"].GetString(), HasSubstr(", in picky\n"));
    }
  }
  EXPECT_GT(server_lines, 3);
  EXPECT_TRUE(found_error) << server->Log();
}

// Every series the dashboard queries is one the server exports (a renamed metric would leave a
// panel silently empty).
TEST(MetricsEndpointTest, TheDashboardQueriesOnlyExportedMetrics) {
  auto server = ServerProcess::StartWithFunctions({"tests/functions/server"}, 2,
                                                  {"--metrics-listen=127.0.0.1:0"});
  ASSERT_NE(server, nullptr);
  const int port = MetricsPort(*server);
  ASSERT_GT(port, 0);
  const std::string scrape = Scrape(port);
  std::ifstream file(testing::Runfile("packaging/grafana/cnp.json"));
  std::stringstream text;
  text << file.rdbuf();
  rapidjson::Document dashboard;
  dashboard.Parse(text.str().c_str());
  ASSERT_FALSE(dashboard.HasParseError());
  ASSERT_TRUE(dashboard["panels"].IsArray());
  int queried = 0;
  for (const auto& panel : dashboard["panels"].GetArray()) {
    for (const auto& target : panel["targets"].GetArray()) {
      const std::string expr = target["expr"].GetString();
      for (size_t at = expr.find("cnp_"); at != std::string::npos; at = expr.find("cnp_", at)) {
        size_t end = at;
        while (end < expr.size() && (std::isalnum(expr[end]) || expr[end] == '_')) ++end;
        std::string name = expr.substr(at, end - at);
        if (absl::EndsWith(name, "_bucket")) name.resize(name.size() - 7);
        EXPECT_THAT(scrape, HasSubstr("# TYPE " + name + " ")) << expr;
        ++queried;
        at = end;
      }
    }
  }
  EXPECT_GE(queried, 8);

  // This scrape is of a server that has served no call, as an adapter-only deployment's may
  // be for ever: the instance picker must still list it, or every panel stays empty.
  bool picker = false;
  for (const auto& variable : dashboard["templating"]["list"].GetArray()) {
    if (std::string(variable["name"].GetString()) != "instance") continue;
    picker = true;
    const std::string query = variable["query"].GetString();
    ASSERT_TRUE(absl::StartsWith(query, "label_values(") && absl::EndsWith(query, ", instance)"))
        << query;
    const std::string metric = query.substr(13, query.find(',') - 13);
    bool has_series = false;
    for (absl::string_view line : absl::StrSplit(scrape, '\n')) {
      has_series |= absl::StartsWith(line, metric + " ") || absl::StartsWith(line, metric + "{");
    }
    EXPECT_TRUE(has_series) << metric << " has no series before the first call:\n" << scrape;
    // "All" as a regex of every value, not a list of those seen when the dashboard loaded.
    ASSERT_TRUE(variable.HasMember("allValue"));
    EXPECT_STREQ(variable["allValue"].GetString(), ".*");
  }
  EXPECT_TRUE(picker);
}

}  // namespace
}  // namespace cnp
