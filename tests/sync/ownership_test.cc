// cnp sync's _local/cnp-sync:NAME records against a scripted CouchDB that keeps documents and
// their revision histories (pouchdb-server cannot be made to fail one write): a record that
// failed to be settled after its design document was written does not disown the copy; an
// announcement that fails leaves the design document unwritten; an announced write that
// someone else changed afterwards is not claimed.
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "client/sync/registry_sync.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/couchdb/couch_client.h"
#include "common/couchdb/json.h"
#include "tests/support/scripted_http_server.h"

namespace cnp::upload::testing {
namespace {

using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A CouchDB 3 with the databases "reg" (the registry, whose one entry the test sets) and
// "account/a1": documents are kept with their revision histories (?revs=true), a write over
// the wrong revision is a conflict, and `fault` may answer a request instead.
class HistoryCouch {
 public:
  HistoryCouch() : server_([this](const HttpRequest& r) { return Answer(r); }) {}

  std::string url() const { return server_.url(); }

  // The entry, targeting the databases `targets` matches.
  void SetEntry(bool removed, int version, const std::string& targets = "account/*") {
    absl::MutexLock lock(&mu_);
    entry_ = absl::StrCat(
        R"({"_id": "towns@classification:account", "_rev": "1-r", "type": "cnp_design_document", )",
        R"("name": "towns", "target": {"classification": "account", "databases": [")", targets,
        R"("]}, )",
        R"("design_document": {"_id": "_design/towns", "language": "python", )",
        R"("views": {"by_town": {"map": "myviews.townmap|)", version, R"("}}}, "removed": )",
        removed ? "true" : "false", "}");
  }
  void SetFault(std::function<std::optional<ScriptedResponse>(const HttpRequest&)> fault) {
    absl::MutexLock lock(&mu_);
    fault_ = std::move(fault);
  }
  // The stored document at `path` ("/account%2Fa1/_design/towns"), without "_revisions"; none
  // when missing or deleted.
  std::optional<rapidjson::Document> Stored(const std::string& path) {
    absl::MutexLock lock(&mu_);
    auto it = docs_.find(path);
    if (it == docs_.end() || it->second.deleted) return std::nullopt;
    return *couchdb::ParseJson(WithRev(it->second, false));
  }
  // Writes as someone else would (no fault applies).
  void PutByHand(const std::string& path, const std::string& body) {
    absl::MutexLock lock(&mu_);
    Write(path, body, /*check_rev=*/false);
  }

 private:
  struct Doc {
    std::string body;                // without _id/_rev
    std::vector<std::string> hashes;  // newest first
    bool deleted = false;
  };

  static std::string WithRev(const Doc& doc, bool revisions) {
    rapidjson::Document d = *couchdb::ParseJson(doc.body);
    auto& a = d.GetAllocator();
    const std::string rev = absl::StrCat(doc.hashes.size(), "-", doc.hashes.front());
    d.AddMember("_rev", couchdb::StringValue(rev, a), a);
    if (revisions) {
      rapidjson::Value history(rapidjson::kObjectType);
      history.AddMember("start", static_cast<int64_t>(doc.hashes.size()), a);
      rapidjson::Value ids(rapidjson::kArrayType);
      for (const std::string& h : doc.hashes) ids.PushBack(couchdb::StringValue(h, a), a);
      history.AddMember("ids", ids, a);
      d.AddMember("_revisions", history, a);
    }
    return couchdb::ToJson(d);
  }

  ScriptedResponse Write(const std::string& path, const std::string& body, bool check_rev)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    rapidjson::Document d = *couchdb::ParseJson(body);
    const std::string given(couchdb::StringMember(d, "_rev"));
    d.RemoveMember("_rev");
    Doc& doc = docs_[path];
    const std::string current =
        doc.hashes.empty() ? "" : absl::StrCat(doc.hashes.size(), "-", doc.hashes.front());
    if (check_rev && given != (doc.deleted ? "" : current)) {
      return {409, R"({"error": "conflict", "reason": "Document update conflict."})"};
    }
    doc.body = couchdb::ToJson(d);
    doc.deleted = false;
    doc.hashes.insert(doc.hashes.begin(), absl::StrCat("h", ++writes_));
    return {201, absl::StrCat(R"({"ok": true, "rev": ")", doc.hashes.size(), "-",
                              doc.hashes.front(), "\"}")};
  }

  ScriptedResponse Answer(const HttpRequest& r) {
    absl::MutexLock lock(&mu_);
    if (fault_) {
      if (std::optional<ScriptedResponse> faulty = fault_(r)) return *faulty;
    }
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (call == "GET /_all_dbs") return {200, R"(["account/a1", "reg"])"};
    if (call == "GET /reg/_all_docs?include_docs=true&limit=500") {
      return {200, absl::StrCat(R"({"rows": [{"id": "towns@classification:account", "doc": )",
                                entry_, "}]}")};
    }
    if (absl::StrContains(r.target, "/_local_docs?")) return {404, R"({"error": "not_found"})"};
    std::string path = r.target;
    const bool revisions = absl::EndsWith(path, "?revs=true");
    std::string rev;
    if (size_t q = path.find('?'); q != std::string::npos) {
      if (absl::StartsWith(path.substr(q), "?rev=")) rev = path.substr(q + 5);
      path = path.substr(0, q);
    }
    auto it = docs_.find(path);
    const bool present = it != docs_.end() && !it->second.deleted;
    if (r.method == "GET") {
      if (!present) return {404, R"({"error": "not_found", "reason": "missing"})"};
      return {200, WithRev(it->second, revisions)};
    }
    if (r.method == "PUT") return Write(path, r.body, /*check_rev=*/true);
    if (r.method == "DELETE" && present) {
      const std::string current =
          absl::StrCat(it->second.hashes.size(), "-", it->second.hashes.front());
      absl::StrReplaceAll({{"%2D", "-"}}, &rev);
      if (rev != current) return {409, R"({"error": "conflict"})"};
      it->second.deleted = true;
      it->second.hashes.insert(it->second.hashes.begin(), absl::StrCat("h", ++writes_));
      return {200, absl::StrCat(R"({"ok": true, "rev": ")", it->second.hashes.size(), "-",
                                it->second.hashes.front(), "\"}")};
    }
    return {500, absl::StrCat(R"({"error": "unexpected", "reason": ")", call, "\"}")};
  }

  absl::Mutex mu_;
  std::string entry_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Doc> docs_ ABSL_GUARDED_BY(mu_);
  int writes_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<std::optional<ScriptedResponse>(const HttpRequest&)> fault_ ABSL_GUARDED_BY(mu_);
  ScriptedHttpServer server_;  // last: stopped before what it answers from goes
};

constexpr char kDesign[] = "/account%2Fa1/_design/towns";
constexpr char kRecord[] = "/account%2Fa1/_local/cnp-sync%3Atowns";

struct Pass {
  absl::Status status;
  std::vector<std::string> outcomes;  // "ACTION"
  std::vector<std::string> problems;
};

Pass SyncOnce(HistoryCouch& couch) {
  couchdb::CouchClient client({.base_url = couch.url()});
  Pass pass;
  client::sync::RegistrySync sync(client, "reg", {}, [&](const v1::UploadEvent& e) {
    if (e.has_outcome()) {
      pass.outcomes.push_back(v1::DesignDocOutcome::Action_Name(e.outcome().action()));
    }
    if (e.has_problem()) pass.problems.push_back(e.problem().message());
  });
  pass.status = sync.SyncAll();
  return pass;
}

// The first write of the record after the design document's (the one that says it is written)
// fails with 503.
std::function<std::optional<ScriptedResponse>(const HttpRequest&)> FailRecordAfterDesign() {
  return [design_written = false, failed = false](
             const HttpRequest& r) mutable -> std::optional<ScriptedResponse> {
    if (r.method != "PUT") return std::nullopt;
    if (r.target == kDesign) design_written = true;
    if (r.target == kRecord && design_written && !failed) {
      failed = true;
      return ScriptedResponse{503, R"({"error": "service_unavailable", "reason": "busy"})"};
    }
    return std::nullopt;
  };
}

TEST(OwnershipTest, ARecordThatFailedToBeWrittenAfterTheDesignDocumentDoesNotDisownIt) {
  HistoryCouch couch;
  couch.SetEntry(/*removed=*/false, 1);
  couch.SetFault(FailRecordAfterDesign());
  Pass first = SyncOnce(couch);
  ASSERT_TRUE(first.status.ok()) << first.status;
  EXPECT_THAT(first.outcomes, ElementsAre("CREATED"));
  EXPECT_THAT(first.problems,
              ElementsAre(AllOf(HasSubstr("service_unavailable"),
                                HasSubstr("settles the record on its next pass"))));
  couch.SetFault(nullptr);

  // The next pass finds the design document as it announced it, and settles the record.
  Pass second = SyncOnce(couch);
  ASSERT_TRUE(second.status.ok()) << second.status;
  EXPECT_THAT(second.outcomes, ElementsAre("UNCHANGED"));
  EXPECT_THAT(second.problems, IsEmpty());
  std::optional<rapidjson::Document> record = couch.Stored(kRecord);
  std::optional<rapidjson::Document> design = couch.Stored(kDesign);
  ASSERT_TRUE(record && design);
  EXPECT_FALSE(record->HasMember("writing")) << couchdb::ToJson(*record);
  EXPECT_EQ(couchdb::StringMember(*record, "design_rev"), couchdb::StringMember(*design, "_rev"));

  // So a removal takes it out (before: "was not put there by cnp sync ... left in place").
  couch.SetEntry(/*removed=*/true, 1);
  Pass removal = SyncOnce(couch);
  ASSERT_TRUE(removal.status.ok()) << removal.status;
  EXPECT_THAT(removal.outcomes, ElementsAre("REMOVED"));
  EXPECT_THAT(removal.problems, IsEmpty());
  EXPECT_FALSE(couch.Stored(kDesign).has_value());
}

TEST(OwnershipTest, AStopBetweenTheTwoWritesLeavesACopyARemovalStillTakesOut) {
  HistoryCouch couch;
  couch.SetEntry(/*removed=*/false, 1);
  // The process ends (or CouchDB goes away) once the design document is written.
  couch.SetFault([design_written = false](const HttpRequest& r) mutable
                 -> std::optional<ScriptedResponse> {
    if (r.method == "PUT" && r.target == kDesign) {
      design_written = true;
      return std::nullopt;
    }
    if (design_written && r.target == kRecord) {
      return ScriptedResponse{.hang_up = true};
    }
    return std::nullopt;
  });
  (void)SyncOnce(couch);
  ASSERT_TRUE(couch.Stored(kDesign).has_value());
  couch.SetFault(nullptr);

  // Removed before any other pass ran: the announced write is recognised as cnp sync's.
  couch.SetEntry(/*removed=*/true, 1);
  Pass removal = SyncOnce(couch);
  ASSERT_TRUE(removal.status.ok()) << removal.status;
  EXPECT_THAT(removal.outcomes, ElementsAre("REMOVED"));
  EXPECT_THAT(removal.problems, IsEmpty());
  EXPECT_FALSE(couch.Stored(kDesign).has_value());
}

TEST(OwnershipTest, AnAnnouncedWriteSomeoneChangedAfterwardsIsNotClaimed) {
  HistoryCouch couch;
  couch.SetEntry(/*removed=*/false, 1);
  couch.SetFault(FailRecordAfterDesign());
  ASSERT_TRUE(SyncOnce(couch).status.ok());
  couch.SetFault(nullptr);
  // Someone edits the copy before any pass settled the record.
  rapidjson::Document edited = *couch.Stored(kDesign);
  edited.AddMember("note", "mine now", edited.GetAllocator());
  couch.PutByHand(kDesign, couchdb::ToJson(edited));

  couch.SetEntry(/*removed=*/true, 1);
  Pass removal = SyncOnce(couch);
  ASSERT_TRUE(removal.status.ok()) << removal.status;
  EXPECT_THAT(removal.outcomes, IsEmpty());
  EXPECT_THAT(removal.problems,
              ElementsAre(HasSubstr("_design/towns in account/a1 was changed by someone else after cnp sync wrote it")));
  EXPECT_TRUE(couch.Stored(kDesign).has_value());
}

TEST(OwnershipTest, AnAnnouncementThatFailsLeavesTheDesignDocumentUnwritten) {
  HistoryCouch couch;
  couch.SetEntry(/*removed=*/false, 1);
  couch.SetFault([failed = false](const HttpRequest& r) mutable -> std::optional<ScriptedResponse> {
    if (r.method == "PUT" && r.target == kRecord && !failed) {
      failed = true;
      return ScriptedResponse{503, R"({"error": "service_unavailable", "reason": "busy"})"};
    }
    return std::nullopt;
  });
  Pass first = SyncOnce(couch);
  EXPECT_FALSE(first.status.ok());
  EXPECT_THAT(first.problems, ElementsAre(AllOf(HasSubstr("service_unavailable"),
                                                HasSubstr("_design/towns left unwritten"))));
  EXPECT_FALSE(couch.Stored(kDesign).has_value());

  Pass second = SyncOnce(couch);
  ASSERT_TRUE(second.status.ok()) << second.status;
  EXPECT_THAT(second.outcomes, ElementsAre("CREATED"));
  std::optional<rapidjson::Document> record = couch.Stored(kRecord);
  ASSERT_TRUE(record.has_value());
  EXPECT_FALSE(record->HasMember("writing"));
  EXPECT_EQ(couchdb::StringMember(*record, "design_rev"),
            couchdb::StringMember(*couch.Stored(kDesign), "_rev"));
}

// Two cnp sync runs at once (a cron --once beside a follower, two hosts): both read no record
// and no design document, and the other one announces, writes and settles first. This run's
// announcement then conflicts on the record; it reads the record and the design document again
// and finds the work done, rather than failing the database (a review: three overlapping
// --once passes over 304 databases exited 1 with 127-148 such errors).
TEST(OwnershipTest, ARecordChangedByAnotherSyncMeanwhileIsReadAgainNotAnError) {
  HistoryCouch couch;
  couch.SetEntry(/*removed=*/false, 1);
  ASSERT_TRUE(SyncOnce(couch).status.ok());  // the other run, done
  std::optional<rapidjson::Document> design_before = couch.Stored(kDesign);
  ASSERT_TRUE(design_before.has_value());
  // This run read both before the other one wrote them.
  couch.SetFault([unread = std::set<std::string>{kDesign, kRecord}](
                     const HttpRequest& r) mutable -> std::optional<ScriptedResponse> {
    if (r.method == "GET" && unread.erase(r.target.substr(0, r.target.find('?'))) == 1) {
      return ScriptedResponse{404, R"({"error": "not_found", "reason": "missing"})"};
    }
    return std::nullopt;
  });
  Pass pass = SyncOnce(couch);
  ASSERT_TRUE(pass.status.ok()) << pass.status;
  EXPECT_THAT(pass.outcomes, ElementsAre("UNCHANGED"));
  EXPECT_THAT(pass.problems, ElementsAre(HasSubstr("changed concurrently")));
  // Nothing was written over the other run's work.
  EXPECT_EQ(couchdb::StringMember(*couch.Stored(kDesign), "_rev"),
            couchdb::StringMember(*design_before, "_rev"));
  // And the copy is still cnp sync's: a removal takes it out.
  couch.SetFault(nullptr);
  couch.SetEntry(/*removed=*/true, 1);
  Pass removal = SyncOnce(couch);
  ASSERT_TRUE(removal.status.ok()) << removal.status;
  EXPECT_THAT(removal.outcomes, ElementsAre("REMOVED"));
}

// A copy the registry no longer targets, whose removal failed in the pass after the change
// (CouchDB answered 500), is removed when the database is tried again while following. Before,
// the retry synced only the entries that target it, and the copy stayed.
TEST(OwnershipTest, AnUntargetedCopyWhoseRemovalFailedIsRemovedOnTheRetry) {
  HistoryCouch couch;
  couch.SetEntry(/*removed=*/false, 1);
  ASSERT_THAT(SyncOnce(couch).outcomes, ElementsAre("CREATED"));
  couch.SetEntry(/*removed=*/false, 1, "elsewhere/*");
  absl::Mutex mu;
  int deletes = 0;
  int polls = 0;
  couch.SetFault([&](const HttpRequest& r) -> std::optional<ScriptedResponse> {
    absl::MutexLock lock(&mu);
    if (absl::StartsWith(r.target, "/_db_updates")) {
      if (absl::StrContains(r.target, "feed=longpoll")) ++polls;
      return ScriptedResponse{200, R"({"results": [], "last_seq": "1"})"};
    }
    if (r.method == "DELETE" && absl::StartsWith(r.target, kDesign) && ++deletes == 1) {
      return ScriptedResponse{500, R"({"error": "internal_server_error", "reason": "busy"})"};
    }
    return std::nullopt;
  });
  couchdb::CouchClient client({.base_url = couch.url()});
  client::sync::RegistrySync::Options options;
  options.poll_timeout = absl::Milliseconds(20);
  options.first_retry_delay = absl::Milliseconds(1);
  options.max_retry_delay = absl::Milliseconds(2);
  std::vector<std::string> outcomes;
  client::sync::RegistrySync sync(client, "reg", options, [&](const v1::UploadEvent& e) {
    if (e.has_outcome()) {
      outcomes.push_back(v1::DesignDocOutcome::Action_Name(e.outcome().action()));
    }
  });
  absl::Status status = sync.Follow([&] {
    absl::MutexLock lock(&mu);
    return deletes < 2 && polls < 100;
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_THAT(outcomes, ElementsAre("REMOVED"));
  EXPECT_FALSE(couch.Stored(kDesign).has_value());
}

// The same for a database deleted while a copy no longer targeted is taken out of it: a warning,
// not an error (before: an error, and `cnp sync --once` exited 1).
TEST(OwnershipTest, ADatabaseDeletedWhileAnUntargetedCopyIsRemovedIsAWarning) {
  HistoryCouch couch;
  couch.SetEntry(/*removed=*/false, 1);
  ASSERT_THAT(SyncOnce(couch).outcomes, ElementsAre("CREATED"));
  couch.SetEntry(/*removed=*/false, 1, "elsewhere/*");
  couch.SetFault([](const HttpRequest& r) -> std::optional<ScriptedResponse> {
    if (r.method == "DELETE" && absl::StartsWith(r.target, kDesign)) {
      return ScriptedResponse{404, R"({"error": "not_found", "reason": "Database does not exist."})"};
    }
    return std::nullopt;  // GET /account%2Fa1 finds no database either
  });
  Pass pass = SyncOnce(couch);
  EXPECT_TRUE(pass.status.ok()) << pass.status;
  // Said once (before, the 404 was reported twice, as two errors).
  EXPECT_THAT(pass.problems, ElementsAre(HasSubstr("matches no database"),
                                         HasSubstr("account/a1 was deleted while cnp sync ")));
}

// A target database deleted during a pass (tenants come and go) is no failure of the pass: a
// warning says so, and SyncAll is OK (`cnp sync --once` exits 0). A 404 while the database is
// still there stays an error.
TEST(OwnershipTest, ATargetDeletedDuringThePassIsAWarningNotAnError) {
  HistoryCouch couch;
  couch.SetEntry(/*removed=*/false, 1);
  for (const bool deleted : {true, false}) {
    couch.SetFault([deleted](const HttpRequest& r) -> std::optional<ScriptedResponse> {
      if (r.method == "PUT" && r.target == kRecord) {
        return ScriptedResponse{404, R"({"error": "not_found", "reason": "Database does not exist."})"};
      }
      if (r.method == "GET" && r.target == "/account%2Fa1" && !deleted) {
        return ScriptedResponse{200, R"({"db_name": "account/a1"})"};
      }
      return std::nullopt;
    });
    Pass pass = SyncOnce(couch);
    if (deleted) {
      EXPECT_TRUE(pass.status.ok()) << pass.status;
      EXPECT_THAT(pass.problems, ElementsAre(HasSubstr("account/a1 was deleted while cnp sync "
                                                       "wrote its design documents")));
    } else {
      EXPECT_TRUE(absl::IsNotFound(pass.status)) << pass.status;
      EXPECT_THAT(pass.problems, ElementsAre(HasSubstr("Database does not exist")));
    }
  }
}

}  // namespace
}  // namespace cnp::upload::testing
