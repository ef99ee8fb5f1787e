// --log-format=json makes every line the server writes one JSON object: the access log's lines
// (before: plain text whatever the format) and libmicrohttpd's own messages (before: every
// shutdown with metrics on printed "Using MHD_quiesce_daemon in this mode requires
// MHD_USE_ITC.", and the quiesce failed).
#include <signal.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/lib/cnp_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"
#include "tests/support/server_process.h"

namespace cnp {
namespace {

using ::cnp::testing::Runfile;
using ::cnp::testing::ServerProcess;
using ::cnp::testing::ShortTempDir;
using ::cnp::testing::WriteFile;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(JsonLogTest, AccessLinesAndMetricsShutdownAreJson) {
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/token", "t0ken-for-json-log\n", 0600);
  auto server = ServerProcess::Launch(
      {.args = {"--workers=1", "--grpc-threads=2", "--log-format=json",
                "--python-path=" + Runfile("tests/functions/server"), "--listen=127.0.0.1:0",
                "--auth-token-file=" + dir + "/token", "--metrics-listen=127.0.0.1:0"}});
  ASSERT_TRUE(server->ready()) << server->Log();
  const int port = server->Port();
  ASSERT_GT(port, 0) << server->Log();

  // A call without the token: refused, and an access-log line says so.
  auto client = client::Client::Connect(absl::StrCat("127.0.0.1:", port));
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->Map({"svc_fns.doubled"}, {R"({"_id":"a","n":1})"}).status().code(),
            absl::StatusCode::kUnauthenticated);

  // The stop is where libmicrohttpd complained.
  server->Signal(SIGTERM);
  EXPECT_EQ(server->ExitCode(), 0) << server->Log();

  const std::string log = server->Log();
  EXPECT_THAT(log, Not(HasSubstr("MHD_")));
  int access_lines = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    rapidjson::Document json;
    json.Parse(line.data(), line.size());
    ASSERT_FALSE(json.HasParseError()) << "not JSON: " << line;
    ASSERT_TRUE(json.IsObject()) << line;
    ASSERT_TRUE(json.HasMember("ts") && json.HasMember("level") && json.HasMember("pid") &&
                json.HasMember("msg"))
        << line;
    if (std::string(json["level"].GetString()) != "ACCESS") continue;
    ++access_lines;
    // The text line's fields: event, peer and the details, each a member of its own.
    EXPECT_STREQ(json["msg"].GetString(), "refused") << line;
    ASSERT_TRUE(json.HasMember("peer") && json.HasMember("call") && json.HasMember("code") &&
                json.HasMember("reason"))
        << line;
    EXPECT_THAT(json["peer"].GetString(), HasSubstr("127.0.0.1:"));
    EXPECT_STREQ(json["call"].GetString(), "Map");
    EXPECT_STREQ(json["code"].GetString(), "UNAUTHENTICATED");
    EXPECT_STREQ(json["reason"].GetString(), "no bearer token");
  }
  EXPECT_EQ(access_lines, 1) << log;
}

// A server with the test functions and --log-format=json on a loopback port, and a client
// of it (null when it could not connect, the test failed).
struct JsonLogServer {
  std::unique_ptr<ServerProcess> server;
  std::unique_ptr<client::Client> client;
};
JsonLogServer StartJsonLogServer() {
  JsonLogServer started;
  started.server = ServerProcess::Launch(
      {.args = {"--workers=1", "--log-format=json",
                "--python-path=" + Runfile("tests/functions/server"), "--listen=127.0.0.1:0"}});
  EXPECT_TRUE(started.server->ready()) << started.server->Log();
  auto client = client::Client::Connect(absl::StrCat("127.0.0.1:", started.server->Port()));
  EXPECT_TRUE(client.ok()) << client.status();
  if (client.ok()) started.client = *std::move(client);
  return started;
}

// A worker that crashes while running a call is an ERROR line a collector can filter by the
// function that was running (before: only the message named it).
// The log of a server with --log-format=json that ran one Map of `function` on `doc`, answered
// with `code`, and stopped.
std::string LogOfOneMap(const std::string& function, const std::string& doc,
                        absl::StatusCode code) {
  auto [server, client] = StartJsonLogServer();
  if (client != nullptr) {
    auto mapped = client->Map({function}, {doc});
    EXPECT_EQ(mapped.status().code(), code) << mapped.status();
  }
  server->Signal(SIGTERM);
  EXPECT_EQ(server->ExitCode(), 0) << server->Log();
  return server->Log();
}

// The call's own line names its RPC and peer too: the pool's line is written on the pool's
// thread, outside the call's log scope (before: no line named the call's RPC and peer, and the
// pool's line claimed the access log had them, which logs no ordinary call).
TEST(JsonLogTest, AWorkerCrashNamesItsFunctionAsAField) {
  const std::string log =
      LogOfOneMap("svc_fns.exits", R"({"_id":"a"})", absl::StatusCode::kUnavailable);
  int crash_lines = 0;
  int call_lines = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    rapidjson::Document json;
    json.Parse(line.data(), line.size());
    ASSERT_FALSE(json.HasParseError()) << "not JSON: " << line;
    if (!json.IsObject() || !json.HasMember("msg")) continue;
    if (json.HasMember("rpc") && json.HasMember("code")) {
      ++call_lines;
      EXPECT_STREQ(json["level"].GetString(), "ERROR") << line;
      EXPECT_STREQ(json["rpc"].GetString(), "Map") << line;
      ASSERT_TRUE(json.HasMember("peer") && json.HasMember("function")) << line;
      EXPECT_THAT(json["peer"].GetString(), HasSubstr("127.0.0.1:")) << line;
      EXPECT_STREQ(json["function"].GetString(), "svc_fns.exits") << line;
      EXPECT_STREQ(json["code"].GetString(), "UNAVAILABLE") << line;
      EXPECT_THAT(json["msg"].GetString(), HasSubstr("svc_fns.exits")) << line;
      continue;
    }
    if (!absl::StrContains(json["msg"].GetString(), "while running Map")) continue;
    ++crash_lines;
    EXPECT_STREQ(json["level"].GetString(), "ERROR") << line;
    ASSERT_TRUE(json.HasMember("function") && json.HasMember("worker_pid")) << line;
    EXPECT_STREQ(json["function"].GetString(), "svc_fns.exits") << line;
    EXPECT_TRUE(json["worker_pid"].IsInt64()) << line;
    ASSERT_TRUE(json.HasMember("cause")) << line;
    EXPECT_STREQ(json["cause"].GetString(), "crash") << line;
    EXPECT_THAT(json["msg"].GetString(), Not(HasSubstr("peer"))) << line;
  }
  EXPECT_EQ(crash_lines, 1) << log;
  EXPECT_EQ(call_lines, 1) << log;
}

// What a function prints (stdout, stderr, warnings) is one JSON event per line, attributed to
// the function and document, not raw text among the JSON lines (before: three lines a collector
// could not read, and a warning's two).
TEST(JsonLogTest, WhatAFunctionPrintsIsJsonToo) {
  const std::string log = LogOfOneMap("svc_fns.prints", R"({"_id":"p1"})", absl::StatusCode::kOk);
  std::vector<std::string> printed;
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    rapidjson::Document json;
    json.Parse(line.data(), line.size());
    ASSERT_FALSE(json.HasParseError()) << "not JSON: " << line;
    if (!json.IsObject() || !json.HasMember("stream")) continue;
    ASSERT_TRUE(json.HasMember("function") && json.HasMember("doc_id")) << line;
    EXPECT_STREQ(json["function"].GetString(), "svc_fns.prints") << line;
    EXPECT_STREQ(json["doc_id"].GetString(), "p1") << line;
    printed.push_back(absl::StrCat(json["stream"].GetString(), ": ", json["msg"].GetString()));
  }
  ASSERT_GE(printed.size(), 3u) << log;
  EXPECT_EQ(printed[0], "stdout: printed p1");
  EXPECT_EQ(printed[1], "stderr: to stderr p1");
  EXPECT_THAT(printed[2], HasSubstr("UserWarning: careful with p1"));
}

// What a worker's process writes past Python's print (os.write to its descriptors, a
// subprocess) is a JSON event per line too, its worker named: written raw, a subprocess that
// echoed a document could put a line in the log that passed for the server's own (found by a
// robustness probe), and broke the JSON.
TEST(JsonLogTest, WhatAWorkerWritesPastPrintIsJsonToo) {
  auto [server, client] = StartJsonLogServer();
  ASSERT_NE(client, nullptr);
  auto mapped = client->Map({"svc_fns.writes_raw"}, {R"({"_id":"r1\nr2"})"});
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  ASSERT_TRUE(server->WaitForLog("forged r1", absl::Seconds(30))) << server->Log();
  server->Signal(SIGTERM);
  EXPECT_EQ(server->ExitCode(), 0) << server->Log();
  const std::string log = server->Log();
  std::vector<std::string> relayed;
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    rapidjson::Document json;
    json.Parse(line.data(), line.size());
    ASSERT_FALSE(json.HasParseError()) << "not JSON: " << line;
    ASSERT_TRUE(json.IsObject() && json.HasMember("msg") && json.HasMember("level")) << line;
    EXPECT_STRNE(json["msg"].GetString(), "forged r1") << line;
    if (!json.HasMember("stream") || json["stream"] != "raw") continue;
    EXPECT_STREQ(json["level"].GetString(), "WARN") << line;
    ASSERT_TRUE(json.HasMember("worker_pid") && json["worker_pid"].IsInt64()) << line;
    relayed.push_back(json["msg"].GetString());
  }
  EXPECT_THAT(relayed, ::testing::ElementsAre("raw out r1", "r2", "raw err \x1b[31mred",
                                              R"({"level":"ERROR","msg":"forged r1)", R"(r2"})"))
      << log;
}

// A long line is relayed whole, in pieces each an event of its own: cut to one log line, as
// it was, three quarters of every 64 KiB read were lost, uncounted (found by a review).
TEST(JsonLogTest, ALongLineAWorkerWritesIsRelayedInPieces) {
  auto [server, client] = StartJsonLogServer();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Map({"svc_fns.writes_long_raw"}, {R"({"_id":"l","bytes":100000})"}).ok());
  ASSERT_TRUE(server->WaitForLog("end of the long line", absl::Seconds(30))) << server->Log();
  size_t relayed_bytes = 0;
  int pieces = 0;
  for (absl::string_view line : absl::StrSplit(server->Log(), '\n', absl::SkipEmpty())) {
    rapidjson::Document json;
    json.Parse(line.data(), line.size());
    ASSERT_FALSE(json.HasParseError()) << "not JSON: " << line.substr(0, 200);
    if (!json.HasMember("stream") || json["stream"] != "raw") continue;
    const absl::string_view msg(json["msg"].GetString(), json["msg"].GetStringLength());
    EXPECT_FALSE(json.HasMember("truncated")) << line.substr(0, 200);
    if (msg.find_first_not_of('y') != absl::string_view::npos) continue;
    relayed_bytes += msg.size();
    ++pieces;
  }
  EXPECT_EQ(relayed_bytes, 100000u);
  EXPECT_GE(pieces, 98);
}

// A printed line names its document by the first 256 bytes of a long _id, as log() lines do:
// CouchDB bounds no id, and a full copy in every event would cost an id's size per print.
TEST(JsonLogTest, APrintedLineNamesALongIdByItsStart) {
  const std::string id = "p" + std::string(10000, 'x');
  const std::string log =
      LogOfOneMap("svc_fns.prints", absl::StrCat(R"({"_id":")", id, R"("})"), absl::StatusCode::kOk);
  int events = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    rapidjson::Document json;
    json.Parse(line.data(), line.size());
    ASSERT_FALSE(json.HasParseError()) << "not JSON: " << line.substr(0, 300);
    if (!json.IsObject() || !json.HasMember("stream")) continue;
    ++events;
    EXPECT_EQ(json["doc_id"].GetString(), id.substr(0, 256) + "...");
  }
  EXPECT_GE(events, 3) << log.substr(0, 2000);
}

// What a server in `format` answered to one Map of `function` on `doc` (its rows) and logged.
struct MapAndLog {
  std::string rows, log;
};
MapAndLog MapInFormat(const std::string& format, const std::string& function,
                      const std::string& doc) {
  auto server = ServerProcess::Launch(
      {.args = {"--workers=1", "--log-format=" + format,
                "--python-path=" + Runfile("tests/functions/server"), "--listen=127.0.0.1:0"}});
  EXPECT_TRUE(server->ready()) << server->Log();
  MapAndLog out;
  auto client = client::Client::Connect(absl::StrCat("127.0.0.1:", server->Port()));
  EXPECT_TRUE(client.ok()) << client.status();
  if (client.ok()) {
    auto mapped = (*client)->Map({function}, {doc});
    EXPECT_TRUE(mapped.ok()) << mapped.status();
    if (mapped.ok() && mapped->results_size() == 1) out.rows = mapped->results(0).rows();
  }
  server->Signal(SIGTERM);
  EXPECT_EQ(server->ExitCode(), 0) << server->Log();
  out.log = server->Log();
  return out;
}

// Code written for a plain stderr (sys.stderr.buffer.write, fileno()) runs in JSON format as in
// text format, its bytes logged as events, what is not UTF-8 replaced (before: sys.stderr had
// no .buffer in JSON format, and the function failed with AttributeError).
// Found by a probe: with the C locale every byte above 0x7f became U+FFFD, UTF-8 or not (the
// log is UTF-8, whatever the interpreter's own stderr would have encoded).
TEST(JsonLogTest, BytesWrittenToTheStreamsBuffersAreEventsAndTheStreamsAnswerAsInText) {
  const MapAndLog text = MapInFormat("text", "svc_fns.writes_bytes", R"({"_id":"b1\u20ac"})");
  const MapAndLog json = MapInFormat("json", "svc_fns.writes_bytes", R"({"_id":"b1\u20ac"})");
  // In text too, a printed line is an event: what is not UTF-8 is replaced there as well.
  EXPECT_THAT(text.log, HasSubstr("bytes err \xef\xbf\xbd b1\xe2\x82\xac stream=stderr"));
  ASSERT_FALSE(text.rows.empty()) << text.log;
  // fileno, isatty, encoding and errors: the same answers in both formats.
  EXPECT_EQ(json.rows, text.rows) << json.log;
  std::vector<std::string> printed;
  for (absl::string_view line : absl::StrSplit(json.log, '\n', absl::SkipEmpty())) {
    rapidjson::Document event;
    event.Parse(line.data(), line.size());
    ASSERT_FALSE(event.HasParseError()) << "not JSON: " << line;
    if (!event.IsObject() || !event.HasMember("stream")) continue;
    EXPECT_STREQ(event["function"].GetString(), "svc_fns.writes_bytes") << line;
    printed.push_back(absl::StrCat(event["stream"].GetString(), ": ", event["msg"].GetString()));
  }
  EXPECT_THAT(printed, ::testing::ElementsAre("stdout: bytes out b1\xe2\x82\xac",
                                              "stderr: bytes err \xEF\xBF\xBD b1\xe2\x82\xac"))
      << json.log;
}

// The text format is what it was: "ACCESS cnp-server[pid] refused peer=... call=Map ...".
TEST(JsonLogTest, AccessLinesInTextStayText) {
  const std::string dir = ShortTempDir();
  WriteFile(dir + "/token", "t0ken-for-text-log\n", 0600);
  auto server = ServerProcess::Launch(
      {.args = {"--workers=1", "--grpc-threads=2",
                "--python-path=" + Runfile("tests/functions/server"), "--listen=127.0.0.1:0",
                "--auth-token-file=" + dir + "/token"}});
  ASSERT_TRUE(server->ready()) << server->Log();
  auto client = client::Client::Connect(absl::StrCat("127.0.0.1:", server->Port()));
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_FALSE((*client)->Map({"svc_fns.doubled"}, {R"({"_id":"a","n":1})"}).ok());
  EXPECT_TRUE(server->WaitForLog("reason=\"no bearer token\"", absl::Seconds(10)));
  EXPECT_THAT(server->Log(), HasSubstr(absl::StrCat(" ACCESS cnp-server[", server->pid(),
                                                    "] refused peer=ipv4:127.0.0.1:")));
  EXPECT_THAT(server->Log(), HasSubstr(" call=Map code=UNAUTHENTICATED"));
}

}  // namespace
}  // namespace cnp

namespace cnp {
namespace {

// Found by a probe: a failed call left no line, only a count in the metrics, so a caller that
// probed for functions the allow-list refuses left no trace of who it was. Each failed call is
// a line naming its RPC, code, message and peer (a refusal by the allow-list a warning), at most
// 20 a second.
TEST(JsonLogTest, AFailedCallIsALineNamingItsCodeAndPeerHeldToABudget) {
  auto [server, client] = StartJsonLogServer();
  ASSERT_NE(client, nullptr);
  EXPECT_TRUE(absl::IsPermissionDenied(client->Map({"os.system"}, {R"({"_id":"a"})"}).status()));
  EXPECT_TRUE(absl::IsNotFound(client->Map({"svc_fns.nowhere"}, {R"({"_id":"a"})"}).status()));
  ASSERT_TRUE(client->Map({"svc_fns.doubled"}, {R"({"_id":"a","n":1})"}).ok());
  // A loop of failing calls: at most 20 lines in its second (the two above may share it).
  for (int i = 0; i < 100; ++i) (void)client->Map({"svc_fns.nowhere"}, {R"({"_id":"a"})"});
  // The next second's first line says how many were left out: failing calls go on until it
  // does (a few seconds at most).
  for (const absl::Time until = absl::Now() + absl::Seconds(10);
       absl::Now() < until && !server->WaitForLog("lines of failed calls were left out",
                                                  absl::Milliseconds(100));) {
    (void)client->Map({"svc_fns.nowhere"}, {R"({"_id":"a"})"});
  }
  server->Signal(SIGTERM);
  EXPECT_EQ(server->ExitCode(), 0) << server->Log();

  std::vector<rapidjson::Document> failed;
  for (absl::string_view line : absl::StrSplit(server->Log(), '\n', absl::SkipEmpty())) {
    rapidjson::Document event;
    event.Parse(line.data(), line.size());
    ASSERT_FALSE(event.HasParseError()) << "not JSON: " << line;
    if (event.IsObject() && absl::StartsWith(event["msg"].GetString(), "call failed: ")) {
      failed.push_back(std::move(event));
    }
  }
  ASSERT_GE(failed.size(), 2u) << server->Log();
  EXPECT_STREQ(failed[0]["level"].GetString(), "WARN");
  EXPECT_STREQ(failed[0]["code"].GetString(), "PERMISSION_DENIED");
  EXPECT_STREQ(failed[0]["rpc"].GetString(), "Map");
  EXPECT_THAT(failed[0]["peer"].GetString(), HasSubstr("127.0.0.1:"));
  EXPECT_THAT(failed[0]["msg"].GetString(), HasSubstr("os.system is not allowed"));
  EXPECT_STREQ(failed[1]["level"].GetString(), "INFO");
  EXPECT_STREQ(failed[1]["code"].GetString(), "NOT_FOUND");
  EXPECT_THAT(failed[1]["msg"].GetString(), HasSubstr("has no attribute 'nowhere'"));
  // However many calls each second saw, it wrote at most 20 lines of each level.
  std::map<std::string, int> per_second;
  for (const rapidjson::Document& event : failed) {
    ++per_second[absl::StrCat(std::string(event["ts"].GetString()).substr(0, 19), " ",
                              event["level"].GetString())];
  }
  for (const auto& [second, lines] : per_second) EXPECT_LE(lines, 20) << second;
  EXPECT_LT(failed.size(), 102u) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("lines of failed calls were left out of this log"));
}

}  // namespace
}  // namespace cnp
