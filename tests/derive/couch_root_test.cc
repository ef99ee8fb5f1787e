// What cnp derive asks of the URL it is given before it writes anything, and how it tells a
// created database from anything else a PUT may answer, against a scripted CouchDB 3.4.3
// behind a proxy at /couch/ (pouchdb-server answers neither a path prefix nor CouchDB's own
// welcome); and a lease whose every write conflicts while reads find it free.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/derive/couch_db.h"
#include "client/derive/lease.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/couchdb/couch_client.h"
#include "tests/support/scripted_http_server.h"

namespace cnp::derive {
namespace {

using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// CouchDB 3.4.3's answers at its root and at a database, as a proxy at /couch/ passes them on.
ScriptedResponse ProxiedCouchDb(const HttpRequest& r) {
  if (r.method == "GET" && r.target == "/couch/") {
    return {200, R"({"couchdb":"Welcome","version":"3.4.3","git_sha":"83bdcf693",)"
                 R"("uuid":"1d1a0f2e8b6c4c2f9f4b8f8e8b1c2d3e","features":["quickjs","access-ready",)"
                 R"("partitioned","pluggable-storage-engines","reshard","scheduler"],)"
                 R"("vendor":{"name":"The Apache Software Foundation"}})"};
  }
  if (r.method == "GET" && (r.target == "/couch/orgs/" || r.target == "/couch/orgs")) {
    return {200, R"({"instance_start_time":"1733011200","db_name":"orgs","purge_seq":"0-g1AAAA",)"
                 R"("update_seq":"2-g1AAAA","sizes":{"file":41209,"external":183,"active":966},)"
                 R"("props":{},"doc_del_count":0,"doc_count":2,"disk_format_version":8,)"
                 R"("compact_running":false,"cluster":{"q":2,"n":1,"w":1,"r":1}})"};
  }
  if (r.method == "GET") return {404, R"({"error":"not_found","reason":"Database does not exist."})"};
  return {500, R"({"error":"unscripted"})"};
}

TEST(CouchRootTest, CouchDbsRootBehindAProxysPathPrefixIsAccepted) {
  ScriptedHttpServer couch(ProxiedCouchDb);
  couchdb::CouchClient http({.base_url = couch.url() + "/couch"});
  CouchDb db(http);
  absl::Status status = db.CheckRoot();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_THAT(couch.requests(), ElementsAre("GET /couch/"));
}

TEST(CouchRootTest, ADatabasesUrlIsRefusedWithWhatToPassInstead) {
  ScriptedHttpServer couch(ProxiedCouchDb);
  couchdb::CouchClient http({.base_url = couch.url() + "/couch/orgs"});
  CouchDb db(http);
  absl::Status status = db.CheckRoot();
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat(couch.url(), "/couch/orgs is the URL of the database orgs, "
                                                       "not CouchDB's root")));
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("(here probably ", couch.url(), "/couch)")));
  EXPECT_THAT(status.message(), HasSubstr(R"({"couchdb":"Welcome",...})"));
  // Only asked: nothing written.
  EXPECT_THAT(couch.requests(), ElementsAre("GET /couch/orgs/"));
}

TEST(CouchRootTest, AUrlThatAnswersNeitherIsRefused) {
  ScriptedHttpServer couch(ProxiedCouchDb);
  couchdb::CouchClient http({.base_url = couch.url() + "/elsewhere"});
  CouchDb db(http);
  absl::Status status = db.CheckRoot();
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr("is not CouchDB's root: GET "));
  EXPECT_THAT(status.message(), HasSubstr("answered HTTP 404"));
}

TEST(CouchRootTest, OnlyCouchDbsAnswerForANewDatabaseCountsAsCreatingOne) {
  std::vector<ScriptedResponse> answers = {
      {201, R"({"ok":true})"},                                   // created
      {202, R"({"ok":true})"},                                   // created, not yet on a quorum
      {412, R"({"error":"file_exists"})"},                       // it exists
      {201, R"({"ok":true,"id":"company_reports","rev":"1-a"})"},  // a document, under a database's URL
      {200, R"({"ok":true})"},                                   // not what CouchDB answers
      {201, R"({"ok":false})"},
      {409, R"({"error":"conflict","reason":"Document update conflict."})"},
  };
  size_t next = 0;
  ScriptedHttpServer couch([&](const HttpRequest&) { return answers[next++]; });
  couchdb::CouchClient http({.base_url = couch.url()});
  CouchDb db(http);
  EXPECT_TRUE(db.EnsureDatabase("a").ok());
  EXPECT_TRUE(db.EnsureDatabase("a").ok());
  EXPECT_TRUE(db.EnsureDatabase("a").ok());
  absl::Status document = db.EnsureDatabase("company_reports");
  EXPECT_FALSE(document.ok());
  EXPECT_THAT(document.message(), HasSubstr("but for a new document: the URL is not CouchDB's root"));
  EXPECT_FALSE(db.EnsureDatabase("a").ok());
  EXPECT_FALSE(db.EnsureDatabase("a").ok());
  EXPECT_FALSE(db.EnsureDatabase("a").ok());
  EXPECT_EQ(next, answers.size());
}

// Found by a review with a server answering for CouchDB: a lease write answered 201 without a
// revision was taken as held, and derived documents written on it.
TEST(LeaseTest, AWriteAnsweredWithoutItsRevisionIsNotALeaseHeld) {
  ScriptedHttpServer couch([](const HttpRequest& r) -> ScriptedResponse {
    if (r.method == "GET") return {404, R"({"error":"not_found","reason":"missing"})"};
    return {201, R"({"ok":true})"};
  });
  couchdb::CouchClient http({.base_url = couch.url()});
  CouchDb db(http);
  Lease lease(db, "home", "n", "me", absl::Seconds(10), absl::Seconds(5));
  absl::StatusOr<bool> acquired = lease.TryAcquire();
  ASSERT_FALSE(acquired.ok()) << "held: " << *acquired;
  EXPECT_THAT(acquired.status().message(),
              HasSubstr("was answered without the new revision: whether it was written is "
                        "unknown"));
}

// Found by a review: a proxy answering 2xx with JSON that is not an object ([] or "ok") had
// the lease look its fields up in it (undefined behaviour in an optimized build). Reading or
// writing the lease so is an error that names the answer, and the lease is not held.
TEST(LeaseTest, ALeaseReadOrWriteAnsweredWithJsonThatIsNotAnObjectIsAnError) {
  for (const char* read : {"[]", R"("ok")", "3"}) {
    ScriptedHttpServer couch([read](const HttpRequest& r) -> ScriptedResponse {
      if (r.method == "GET") return {200, read};
      return {500, R"({"error":"unscripted"})"};
    });
    couchdb::CouchClient http({.base_url = couch.url()});
    CouchDb db(http);
    Lease lease(db, "home", "n", "me", absl::Seconds(10), absl::Seconds(5));
    absl::StatusOr<bool> acquired = lease.TryAcquire();
    ASSERT_FALSE(acquired.ok()) << read << " held: " << *acquired;
    EXPECT_THAT(acquired.status().message(), HasSubstr("is not a JSON object")) << read;
    // Nothing was written on the strength of it.
    EXPECT_THAT(couch.requests(), ElementsAre("GET /home/_local/cnp-derive%3An%3Alease")) << read;
  }
  for (const char* written : {"[]", R"("ok")"}) {
    ScriptedHttpServer couch([written](const HttpRequest& r) -> ScriptedResponse {
      if (r.method == "GET") return {404, R"({"error":"not_found","reason":"missing"})"};
      return {201, written};
    });
    couchdb::CouchClient http({.base_url = couch.url()});
    CouchDb db(http);
    Lease lease(db, "home", "n", "me", absl::Seconds(10), absl::Seconds(5));
    absl::StatusOr<bool> acquired = lease.TryAcquire();
    ASSERT_FALSE(acquired.ok()) << written << " held: " << *acquired;
    EXPECT_THAT(acquired.status().message(), HasSubstr("was answered without the new revision"))
        << written;
  }
}

// Found by a review: an instance that took an expired lease over, then let it go before it
// wrote (another lease of its set was held elsewhere), wrote a release whose settle time was
// its own (none), so the next holder wrote at once while the expired holder's last write could
// still land. The release passes the earlier holder's settle time on.
TEST(LeaseTest, AReleasePassesOnTheSettleTimeOfTheHolderItTookTheLeaseFrom) {
  const int64_t settle_ms = absl::ToUnixMillis(absl::Now() + absl::Hours(1));
  absl::Mutex mu;
  std::vector<std::string> puts;
  ScriptedHttpServer couch([&, settle_ms](const HttpRequest& r) -> ScriptedResponse {
    if (r.method == "PUT") {
      absl::MutexLock lock(&mu);
      puts.push_back(r.body);
    }
    if (r.method == "GET") {
      return {200, absl::StrCat(R"({"_id":"_local/cnp-derive:n:lease","_rev":"0-3","holder":"gone",)",
                                R"("expires_at_ms":1,"settle_at_ms":)", settle_ms, "}")};
    }
    return {201, R"({"ok":true,"id":"_local/cnp-derive:n:lease","rev":"0-4"})"};
  });
  couchdb::CouchClient http({.base_url = couch.url()});
  CouchDb db(http);
  Lease lease(db, "home", "n", "me", absl::Seconds(10), absl::Seconds(5));
  absl::StatusOr<bool> acquired = lease.TryAcquire();
  ASSERT_TRUE(acquired.ok()) << acquired.status();
  ASSERT_TRUE(*acquired);
  lease.Release();
  absl::MutexLock lock(&mu);
  ASSERT_EQ(puts.size(), 2u);
  EXPECT_THAT(puts[1], HasSubstr(R"("holder":"")"));
  EXPECT_THAT(puts[1], HasSubstr(absl::StrCat(R"("settle_at_ms":)", settle_ms)));
}

// What pouchdb-server answered under a database's URL: the lease document is never found, and
// every write of it conflicts. Each try waits longer than the last, and once that has gone on
// for longer than the lease timeout it is an error.
TEST(LeaseTest, ReadsThatFindItFreeWhileEveryWriteConflictsEndInAnErrorAfterTheTimeout) {
  ScriptedHttpServer couch([](const HttpRequest& r) -> ScriptedResponse {
    if (r.method == "GET") return {404, R"({"error":"not_found","reason":"missing"})"};
    return {409, R"({"error":"conflict","reason":"Document update conflict."})"};
  });
  couchdb::CouchClient http({.base_url = couch.url()});
  CouchDb db(http);
  Lease lease(db, "home", "n", "me", absl::Milliseconds(200), absl::Milliseconds(100));
  std::vector<absl::Duration> waits;
  absl::Status ended;
  for (int i = 0; i < 10000 && ended.ok(); ++i) {
    absl::StatusOr<bool> acquired = lease.TryAcquire();
    if (!acquired.ok()) {
      ended = acquired.status();
      break;
    }
    ASSERT_FALSE(*acquired);
    EXPECT_EQ(lease.other_holder(), "");
    waits.push_back(lease.wait_hint());
  }
  ASSERT_FALSE(ended.ok()) << "still trying after " << waits.size() << " conflicts";
  EXPECT_THAT(ended.message(), HasSubstr("reading it finds it free but every write conflicts (HTTP 409)"));
  EXPECT_THAT(ended.message(), HasSubstr(absl::StrCat("is ", couch.url(), " CouchDB's root?")));
  ASSERT_GE(waits.size(), 3u);
  EXPECT_EQ(waits[0], absl::Milliseconds(20));
  EXPECT_EQ(waits[1], absl::Milliseconds(40));
  EXPECT_EQ(waits[2], absl::Milliseconds(80));
  EXPECT_LE(waits.back(), absl::Seconds(1));
}

// Two instances racing settle in one round: a conflict followed by a read that names the
// holder is no error, and the races counted so far start again.
TEST(LeaseTest, AConflictThenAReadThatNamesTheHolderIsAnOrdinaryRace) {
  int gets = 0;
  ScriptedResponse held{200, absl::StrCat(R"({"_id":"_local/cnp-derive:n:lease","_rev":"0-1","holder":"other",)",
                                          R"("expires_at_ms":)", absl::ToUnixMillis(absl::Now() + absl::Hours(1)),
                                          "}")};
  ScriptedHttpServer couch([&](const HttpRequest& r) -> ScriptedResponse {
    if (r.method == "GET") return ++gets % 2 == 1 ? ScriptedResponse{404, R"({"error":"not_found"})"} : held;
    return {409, R"({"error":"conflict"})"};
  });
  couchdb::CouchClient http({.base_url = couch.url()});
  CouchDb db(http);
  // (Long enough for each write to have a connection of its own made: writes get half of it.)
  Lease lease(db, "home", "n", "me", absl::Seconds(10), absl::Seconds(5));
  for (int i = 0; i < 6; ++i) {
    absl::StatusOr<bool> acquired = lease.TryAcquire();
    ASSERT_TRUE(acquired.ok()) << acquired.status();
    EXPECT_FALSE(*acquired);
    EXPECT_EQ(lease.other_holder(), i % 2 == 0 ? "" : "other");
    if (i % 2 == 0) {
      EXPECT_EQ(lease.wait_hint(), absl::Milliseconds(20));
    }
  }
}

// A renewal the lease's own thread made while the caller was busy failed (CouchDB away for a
// moment); by the caller's next write CouchDB answers again. That write must not end the run
// with the old failure: the caller renews there and then, and goes on.
TEST(LeaseTest, ABackgroundRenewalThatFailedIsTriedAgainBeforeItEndsTheRun) {
  ScriptedHttpServer caller_side([](const HttpRequest& r) -> ScriptedResponse {
    if (r.method == "GET") return {404, R"({"error":"not_found","reason":"missing"})"};
    return {201, R"({"ok":true,"id":"_local/cnp-derive:n:lease","rev":"0-1"})"};
  });
  absl::Notification renewal_failed;
  ScriptedHttpServer renewer_side([&](const HttpRequest&) -> ScriptedResponse {
    if (!renewal_failed.HasBeenNotified()) renewal_failed.Notify();
    return {503, R"({"error":"unavailable","reason":"starting up"})"};
  });
  couchdb::CouchClient caller_http({.base_url = caller_side.url()});
  couchdb::CouchClient renewer_http({.base_url = renewer_side.url()});
  CouchDb caller_db(caller_http);
  CouchDb renewer_db(renewer_http);
  Lease lease(caller_db, "home", "n", "me", absl::Milliseconds(200), absl::Milliseconds(100));
  absl::StatusOr<bool> acquired = lease.TryAcquire();
  ASSERT_TRUE(acquired.ok() && *acquired) << acquired.status();
  lease.RenewInBackground(renewer_db);
  // The lease's thread holds the lease's lock from before its request until it has noted the
  // answer: the caller's renewal below comes after the failure is recorded.
  renewal_failed.WaitForNotification();
  absl::StatusOr<bool> renewed = lease.RenewIfDue();
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_TRUE(*renewed);
}

}  // namespace
}  // namespace cnp::derive
