// The deriver against a scripted CouchDB 3: sequences are opaque strings ("2-g1AAAA..."), sent
// back as they came, and `pending` gives the backlog. pouchdb-server has numbers only.
#include <algorithm>
#include <map>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "client/derive/deriver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/couchdb/couch_client.h"
#include "common/couchdb/json.h"
#include "tests/support/scripted_http_server.h"
#include "tests/support/server_process.h"

namespace cnp::derive {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;

constexpr char kSeq[] = "2-g1AAAABXeJzLYWBg4MhgTmHgz8tPSTV0MDQy";

TEST(CouchDbSequencesTest, OpaqueSequencesAreSentBackAndCheckpointedAsTheyCame) {
  absl::Mutex mu;
  std::map<std::string, std::string> local;  // _local documents by path
  std::string bulk;
  ScriptedHttpServer couch([&](const HttpRequest& r) -> ScriptedResponse {
    absl::MutexLock lock(&mu);
    const std::string& t = r.target;
    if (absl::StartsWith(t, "/src/_changes?since=0&")) {
      return {200, absl::StrCat(R"({"results":[{"seq":null,"id":"a","changes":[{"rev":"1-x"}],)",
                                R"("doc":{"_id":"a","_rev":"1-x","town":"Oslo"}},)",
                                R"({"seq":"2-g1AAAABXeJzLYWBg4MhgTmHgz8tPSTV0MDQy","id":"b","changes":[{"rev":"1-y"}],)",
                                R"("doc":{"_id":"b","_rev":"1-y","town":"Lima"}}],)",
                                R"("last_seq":")", kSeq, R"(","pending":0})")};
    }
    if (absl::StartsWith(t, "/src/_changes?since=")) {
      return {200, absl::StrCat(R"({"results":[],"last_seq":")", kSeq, R"(","pending":0})")};
    }
    if (t == "/src") return {200, absl::StrCat(R"({"db_name":"src","update_seq":")", kSeq, R"("})")};
    if (t == "/tgt" && r.method == "PUT") return {412, R"({"error":"file_exists"})"};
    if (absl::StartsWith(t, "/tgt/_local/")) {
      if (r.method == "PUT") {
        local[t] = r.body;
        return {201, R"({"ok":true,"rev":"0-1"})"};
      }
      auto it = local.find(t);
      return it == local.end() ? ScriptedResponse{404, R"({"error":"not_found"})"}
                               : ScriptedResponse{200, it->second};
    }
    if (absl::StartsWith(t, "/tgt/_all_docs")) return {200, R"({"rows":[]})"};
    if (t == "/tgt/_bulk_docs") {
      bulk = r.body;
      return {201, "[]"};
    }
    return {500, R"({"error":"unscripted"})"};
  });
  auto server = testing::ServerProcess::Start(
      {"--python-path=" + testing::Runfile("tests/derive/pyfns"), "--workers=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  std::unique_ptr<client::Client> cnp = (*server)->Connect();
  ASSERT_NE(cnp, nullptr);

  couchdb::CouchClient http({.base_url = couch.url()});
  CouchDb db(http);
  Declaration declaration{"s", {Stage{"tgt", "src", false, 1, "derive_fns.town", false}}};
  std::ostringstream log;
  Deriver deriver(declaration, db, *cnp, {}, log, [] { return absl::StatusOr<bool>(true); });
  ASSERT_TRUE(deriver.Start().ok());
  absl::StatusOr<int64_t> handled = deriver.CatchUp();
  ASSERT_TRUE(handled.ok()) << handled.status() << "\n" << log.str();
  EXPECT_EQ(*handled, 2);
  EXPECT_EQ(deriver.progress()[0].seq, kSeq);
  EXPECT_EQ(deriver.progress()[0].backlog, 0);

  absl::MutexLock lock(&mu);
  EXPECT_THAT(bulk, HasSubstr(R"("mr_key":"Oslo")"));
  EXPECT_THAT(bulk, HasSubstr(R"("mr_key":"Lima")"));
  EXPECT_THAT(local["/tgt/_local/cnp-derive%3As%3Asrc"], HasSubstr(absl::StrCat(R"("seq":")", kSeq, R"(")")));
  // The next read started from the opaque sequence, escaped as a query value.
  bool resumed = false;
  for (const std::string& request : couch.requests()) {
    resumed = resumed || absl::StrContains(request, absl::StrCat("/src/_changes?since=", kSeq, "&"));
  }
  EXPECT_TRUE(resumed);
}

// A first synchronization (no checkpoint, nothing derived yet) writes its rows without looking
// them up first; a row that turns out to exist (a conflict) is read, compared and written again
// with its revision.
TEST(CouchDbSequencesTest, AFreshSyncLooksUpOnlyTheRowsThatTurnOutToExist) {
  absl::Mutex mu;
  std::vector<std::string> bulks;
  ScriptedHttpServer couch([&](const HttpRequest& r) -> ScriptedResponse {
    absl::MutexLock lock(&mu);
    const std::string& t = r.target;
    if (absl::StartsWith(t, "/src/_changes?since=0&")) {
      return {200, R"({"results":[{"seq":1,"id":"a","changes":[{"rev":"1-x"}],"doc":{"_id":"a","_rev":"1-x","town":"Oslo"}},
                                  {"seq":2,"id":"b","changes":[{"rev":"1-y"}],"doc":{"_id":"b","_rev":"1-y","town":"Lima"}}],
                     "last_seq":2})"};
    }
    if (absl::StartsWith(t, "/src/_changes?since=")) return {200, R"({"results":[],"last_seq":2})"};
    if (t == "/src") return {200, R"({"db_name":"src","update_seq":2})"};
    if (t == "/tgt" && r.method == "PUT") return {412, R"({"error":"file_exists"})"};
    if (absl::StartsWith(t, "/tgt/_local/")) {
      return r.method == "PUT" ? ScriptedResponse{201, R"({"ok":true,"rev":"0-1"})"}
                               : ScriptedResponse{404, R"({"error":"not_found"})"};
    }
    if (absl::StartsWith(t, "/tgt/_all_docs?limit=1&")) return {200, R"({"rows":[]})"};
    if (t == "/tgt/_bulk_docs") {
      bulks.push_back(r.body);
      absl::StatusOr<rapidjson::Document> body = couchdb::ParseJson(r.body);
      std::string answer = "[";
      for (const auto& doc : (*body)["docs"].GetArray()) {
        std::string id = doc["_id"].GetString();
        bool conflict = bulks.size() == 1 && std::string(doc["mr_source_id"].GetString()) == "a";
        absl::StrAppend(&answer, answer.size() > 1 ? "," : "", R"({"id":")", id,
                        conflict ? R"(","error":"conflict","reason":"Document update conflict."})" : R"(","ok":true,"rev":"1-n"})");
      }
      return {201, answer + "]"};
    }
    if (t == "/tgt/_all_docs?include_docs=true" && r.method == "POST") {
      // a's row exists, from a run that died before its first checkpoint, with another key.
      absl::StatusOr<rapidjson::Document> body = couchdb::ParseJson(r.body);
      std::string id = (*body)["keys"][0].GetString();
      return {200, absl::StrCat(R"({"rows":[{"id":")", id, R"(","key":")", id, R"(","value":{"rev":"1-old"},)",
                                R"("doc":{"_id":")", id, R"(","_rev":"1-old","mr_source_id":"a","mr_value":null,)",
                                R"("mr_key":"Bergen","mr_source_type":"src","mr_version":1}}]})")};
    }
    return {500, R"({"error":"unscripted"})"};
  });
  auto server = testing::ServerProcess::Start(
      {"--python-path=" + testing::Runfile("tests/derive/pyfns"), "--workers=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  std::unique_ptr<client::Client> cnp = (*server)->Connect();
  ASSERT_NE(cnp, nullptr);
  couchdb::CouchClient http({.base_url = couch.url()});
  CouchDb db(http);
  Declaration declaration{"s", {Stage{"tgt", "src", false, 1, "derive_fns.town", false}}};
  std::ostringstream log;
  Deriver deriver(declaration, db, *cnp, {}, log, [] { return absl::StatusOr<bool>(true); });
  ASSERT_TRUE(deriver.Start().ok());
  absl::StatusOr<int64_t> handled = deriver.CatchUp();
  ASSERT_TRUE(handled.ok()) << handled.status() << "\n" << log.str();
  EXPECT_EQ(*handled, 2);
  EXPECT_EQ(deriver.progress()[0].written, 2) << log.str();
  EXPECT_EQ(deriver.progress()[0].errors, 0) << log.str();

  absl::MutexLock lock(&mu);
  ASSERT_EQ(bulks.size(), 2u);
  EXPECT_THAT(bulks[0], HasSubstr(R"("mr_key":"Oslo")"));
  EXPECT_THAT(bulks[0], HasSubstr(R"("mr_key":"Lima")"));
  EXPECT_THAT(bulks[0], Not(HasSubstr("_rev")));
  // Only a's row again, now with the revision it has.
  EXPECT_THAT(bulks[1], HasSubstr(R"("mr_key":"Oslo")"));
  EXPECT_THAT(bulks[1], HasSubstr(R"("_rev":"1-old")"));
  EXPECT_THAT(bulks[1], Not(HasSubstr("Lima")));
  // No lookup before the first write.
  std::vector<std::string> requests = couch.requests();
  auto first_bulk = std::find(requests.begin(), requests.end(), "POST /tgt/_bulk_docs");
  EXPECT_EQ(std::find(requests.begin(), first_bulk, "POST /tgt/_all_docs?include_docs=true"), first_bulk);
}

}  // namespace
}  // namespace cnp::derive
