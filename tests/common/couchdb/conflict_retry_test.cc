// The one read-compare-write loop of upload, registration, cnp sync and cnp upload --remove,
// against a scripted CouchDB whose document someone else keeps changing: each conflict is
// re-read and decided again with the new revision, and past the limit the write gives up with
// the message every caller shows.
#include "common/couchdb/conflict_retry.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/couchdb/json.h"
#include "tests/support/scripted_http_server.h"

namespace cnp::couchdb {
namespace {

using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A document at /db/doc that another writer changes before each of our first `conflicts`
// writes: those get 409, the next one is stored. Every GET shows the current revision.
class ChangingDocument {
 public:
  explicit ChangingDocument(int conflicts)
      : conflicts_(conflicts),
        server_([this](const HttpRequest& request) { return Answer(request); }) {}

  std::string url() const { return server_.url(); }
  std::vector<std::string> written_revs() const {
    absl::MutexLock lock(&mu_);
    return written_revs_;
  }

 private:
  ScriptedResponse Answer(const HttpRequest& request) {
    absl::MutexLock lock(&mu_);
    if (request.target != "/db/doc") return {500, R"({"error":"unscripted"})"};
    const std::string rev = absl::StrCat(generation_, "-r");
    if (request.method == "GET") {
      return {200, absl::StrCat(R"({"_id":"doc","_rev":")", rev, R"(","n":)", generation_, "}")};
    }
    absl::StatusOr<rapidjson::Document> body = ParseJson(request.body);
    if (!body.ok()) return {400, R"({"error":"bad_request"})"};
    const std::string sent_rev(StringMember(*body, "_rev"));
    written_revs_.push_back(sent_rev);
    if (sent_rev != rev) return {409, R"({"error":"conflict","reason":"Document update conflict."})"};
    if (conflicts_ > 0) {
      --conflicts_;
      ++generation_;  // the other writer got there first
      return {409, R"({"error":"conflict","reason":"Document update conflict."})"};
    }
    ++generation_;
    return {201, absl::StrCat(R"({"ok":true,"id":"doc","rev":")", generation_, R"(-r"})")};
  }

  mutable absl::Mutex mu_;
  int conflicts_;
  int generation_ = 1;
  std::vector<std::string> written_revs_;
  ScriptedHttpServer server_;
};

// Writes {"n": stored n + 100}, counting how it was asked.
struct Writer {
  std::vector<int> attempts;
  std::vector<int64_t> seen_n;
  std::vector<std::string> retry_messages;

  absl::StatusOr<WriteResult> Run(CouchClient& couch, int max_conflict_retries) {
    return WriteWithConflictRetry(
        couch,
        {.path = "/db/doc",
         .id = "doc",
         .database = "db",
         .activity = "testing",
         .max_conflict_retries = max_conflict_retries,
         .on_retry = [this](const std::string& message) { retry_messages.push_back(message); }},
        [this](const StoredDocument& stored, int attempt) -> absl::StatusOr<WriteDecision> {
          attempts.push_back(attempt);
          EXPECT_TRUE(stored.doc.has_value());
          if (!stored.doc) return absl::InternalError("no stored document");
          EXPECT_FALSE(stored.doc->HasMember("_rev"));  // given apart, as stored.rev
          const int64_t n = (*stored.doc)["n"].GetInt64();
          seen_n.push_back(n);
          rapidjson::Document next(rapidjson::kObjectType);
          next.AddMember("n", n + 100, next.GetAllocator());
          return next;
        });
  }
};

TEST(ConflictRetryTest, ConflictsUpToTheLimitAreReReadAndDecidedAgainUntilTheWriteSucceeds) {
  ChangingDocument document(/*conflicts=*/3);
  CouchClient couch({.base_url = document.url()});
  Writer writer;
  absl::StatusOr<WriteResult> result = writer.Run(couch, /*max_conflict_retries=*/3);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->written);
  EXPECT_TRUE(result->existed);
  EXPECT_EQ(result->conflict_retries, 3);
  EXPECT_EQ(result->stored_rev, "4-r");
  EXPECT_EQ(result->written_rev, "5-r");
  // Each attempt read the document again and wrote with the revision it had just read.
  EXPECT_THAT(writer.attempts, ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(writer.seen_n, ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(document.written_revs(), ElementsAre("1-r", "2-r", "3-r", "4-r"));
  ASSERT_EQ(writer.retry_messages.size(), 3u);
  EXPECT_EQ(writer.retry_messages[0],
            "doc in db was changed by someone else while testing; re-reading and comparing "
            "again");
}

TEST(ConflictRetryTest, AConflictPastTheLimitGivesUpWithTheCommonMessage) {
  ChangingDocument document(/*conflicts=*/100);
  CouchClient couch({.base_url = document.url()});
  Writer writer;
  absl::StatusOr<WriteResult> result = writer.Run(couch, /*max_conflict_retries=*/2);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::IsAborted(result.status())) << result.status();
  EXPECT_EQ(result.status().message(),
            "doc in db changed concurrently 3 times while testing; gave up without "
            "overwriting it");
  EXPECT_EQ(document.written_revs().size(), 3u);
  EXPECT_EQ(writer.retry_messages.size(), 2u);
}

// Found by a review with a server answering for CouchDB: a 201 whose body names no revision
// (an HTML page, {"ok":false}) was reported as written, and sync recorded it so.
TEST(ConflictRetryTest, ASuccessStatusWithoutTheNewRevisionIsNotAWrite) {
  for (const char* body : {"<html>Created</html>", R"({"ok":false})"}) {
    ScriptedHttpServer couch([&](const HttpRequest& request) -> ScriptedResponse {
      if (request.method == "GET") return {404, R"({"error":"not_found","reason":"missing"})"};
      return {201, body};
    });
    CouchClient client({.base_url = couch.url()});
    absl::StatusOr<WriteResult> result = WriteWithConflictRetry(
        client, {.path = "/db/doc", .id = "doc", .database = "db", .activity = "testing"},
        [](const StoredDocument&, int) -> absl::StatusOr<WriteDecision> {
          return rapidjson::Document(rapidjson::kObjectType);
        });
    ASSERT_FALSE(result.ok()) << body;
    EXPECT_THAT(result.status().message(),
                HasSubstr("answered HTTP 201 to writing doc to db without the new revision: "
                          "whether it was written is unknown"));
  }
}

TEST(ConflictRetryTest, NothingIsWrittenWhenTheCallerDecidesSo) {
  ChangingDocument document(/*conflicts=*/0);
  CouchClient couch({.base_url = document.url()});
  absl::StatusOr<WriteResult> result = WriteWithConflictRetry(
      couch, {.path = "/db/doc", .id = "doc", .database = "db", .activity = "testing"},
      [](const StoredDocument&, int) -> absl::StatusOr<WriteDecision> { return std::nullopt; });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->written);
  EXPECT_EQ(result->stored_rev, "1-r");
  EXPECT_TRUE(document.written_revs().empty());
}

// What the writer carries over from the stored document goes back as CouchDB has it: an
// integer past 64 bits digit for digit, not rounded to a double.
TEST(ConflictRetryTest, AStoredIntegerPast64BitsIsWrittenBackDigitForDigit) {
  constexpr char kBig[] = "123456789012345678901234567890";
  absl::Mutex mu;
  std::string written;
  ScriptedHttpServer server([&](const HttpRequest& request) -> ScriptedResponse {
    if (request.method == "GET") {
      return {200, absl::StrCat(R"({"_id":"doc","_rev":"1-r","meta":{"build":)", kBig, "}}")};
    }
    absl::MutexLock lock(&mu);
    written = request.body;
    return {201, R"({"ok":true,"id":"doc","rev":"2-r"})"};
  });
  CouchClient couch({.base_url = server.url()});
  absl::StatusOr<WriteResult> result = WriteWithConflictRetry(
      couch, {.path = "/db/doc", .id = "doc", .database = "db", .activity = "testing"},
      [](const StoredDocument& stored, int) -> absl::StatusOr<WriteDecision> {
        rapidjson::Document next;
        next.CopyFrom(*stored.doc, next.GetAllocator());
        next.AddMember("added", true, next.GetAllocator());
        return next;
      });
  ASSERT_TRUE(result.ok()) << result.status();
  absl::MutexLock lock(&mu);
  EXPECT_EQ(written, absl::StrCat(R"({"_id":"doc","meta":{"build":)", kBig,
                                  R"(},"added":true,"_rev":"1-r"})"));
}

}  // namespace
}  // namespace cnp::couchdb
