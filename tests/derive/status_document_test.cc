// `cnp derive`'s status document (_local/cnp-derive:NAME:status) during a long initial
// synchronization: it is written as batches complete, not only once the stages have caught up
// (it was absent for the whole of a 110-second run, and never written by a run stopped
// before then). The scripted CouchDB holds the second batch of changes until the status
// document has been written.
#include <atomic>
#include <optional>
#include <regex>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/child_process.h"
#include "tests/support/files.h"
#include "tests/support/runfiles.h"
#include "tests/support/scripted_http_server.h"
#include "tests/support/server_process.h"

namespace cnp::derive {
namespace {

using ::cnp::testing::ChildProcess;
using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(60);

std::string Change(int n) {
  return absl::StrCat(R"({"seq":")", n, R"(-g1AA","id":"d)", n, R"(","changes":[{"rev":"1-x"}],"doc":{"_id":"d)", n,
                      R"(","_rev":"1-x","town":"T)", n, R"("}})");
}

// The ids of a _bulk_docs body, answered as written.
std::string BulkAnswer(const std::string& body) {
  static const std::regex kId(R"re("_id":"([^"]*)")re");
  std::string answer = "[";
  for (auto it = std::sregex_iterator(body.begin(), body.end(), kId); it != std::sregex_iterator(); ++it) {
    absl::StrAppend(&answer, answer.size() > 1 ? "," : "", R"({"ok":true,"id":")", (*it)[1].str(), R"(","rev":"1-a"})");
  }
  return answer + "]";
}

TEST(StatusDocumentTest, ItIsWrittenWhileTheInitialSynchronizationGoesOn) {
  absl::Notification status_written;
  std::atomic<bool> written_before_second_batch{false};
  std::atomic<bool> status_put{false};
  ScriptedHttpServer couch([&](const HttpRequest& r) -> ScriptedResponse {
    const std::string& t = r.target;
    if (t == "/") return {200, R"({"couchdb":"Welcome","version":"3.4.3"})"};
    if (t == "/src") return {200, R"({"db_name":"src","update_seq":"2-g1AA"})"};
    if (t == "/tgt" && r.method == "PUT") return {412, R"({"error":"file_exists"})"};
    if (r.method == "GET" && absl::StartsWith(t, "/tgt/_local/")) return {404, R"({"error":"not_found"})"};
    if (t == "/src/_local/cnp-derive-source") {  // the source's marker: missing, then written
      return r.method == "PUT" ? ScriptedResponse{201, R"({"ok":true,"rev":"0-1"})"}
                               : ScriptedResponse{404, R"({"error":"not_found"})"};
    }
    if (r.method == "PUT" && absl::StartsWith(t, "/tgt/_local/")) {
      if (absl::StrContains(t, "status") && !status_put.exchange(true)) status_written.Notify();
      return {201, R"({"ok":true,"id":"_local/x","rev":"0-1"})"};
    }
    if (absl::StartsWith(t, "/tgt/_all_docs")) return {200, R"({"rows":[]})"};
    if (t == "/tgt/_bulk_docs") return {201, BulkAnswer(r.body)};
    if (absl::StartsWith(t, "/src/_changes?since=0&")) {
      return {200, absl::StrCat(R"({"results":[)", Change(1), R"(],"last_seq":"1-g1AA","pending":1})")};
    }
    if (absl::StartsWith(t, "/src/_changes?since=1-g1AA&")) {
      // The second batch waits (bounded) for the status document.
      if (status_written.WaitForNotificationWithTimeout(absl::Seconds(20))) written_before_second_batch = true;
      return {200, absl::StrCat(R"({"results":[)", Change(2), R"(],"last_seq":"2-g1AA","pending":0})")};
    }
    if (absl::StartsWith(t, "/src/_changes?")) return {200, R"({"results":[],"last_seq":"2-g1AA","pending":0})"};
    return {500, R"({"error":"unscripted"})"};
  });
  auto service = testing::ServerProcess::Start({"--python-path=" + testing::Runfile("tests/derive/pyfns"), "--workers=1"});
  ASSERT_TRUE(service.ok()) << service.status();
  const std::string dir = testing::MakeTempDir("status");
  const std::string declaration = dir + "/derive.yml";
  testing::WriteFile(declaration, "name: s\nhandlers:\n  tgt:\n    src: {type: map, version: 1, handler: derive_fns.town}\n");
  auto run = ChildProcess::Start({testing::Runfile("client/cli/cnp"), "derive", "--once", "--batch-size=1",
                                  "--target=" + (*service)->target(), couch.url(), declaration},
                                 dir, "", kWait);
  ASSERT_TRUE(run.ok()) << run.status();
  std::optional<int> exit_code = (*run)->WaitForExitCode(kWait);
  ASSERT_TRUE(exit_code.has_value()) << (*run)->output();
  EXPECT_EQ(*exit_code, 0) << (*run)->output();
  EXPECT_THAT((*run)->output(), HasSubstr("caught up"));
  EXPECT_TRUE(written_before_second_batch) << (*run)->output();
}

}  // namespace
}  // namespace cnp::derive
