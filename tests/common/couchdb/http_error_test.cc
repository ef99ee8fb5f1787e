// What a user reads when CouchDB refuses a request: a 401 says whether the credentials sent were
// wrong or none were sent, against a scripted CouchDB that wants a user.
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/couchdb/couch_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/scripted_http_server.h"

namespace cnp::couchdb {
namespace {

using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

ScriptedResponse WantsAUser(const HttpRequest&) {
  return {401, R"({"error":"unauthorized","reason":"You are not a server admin."})"};
}

absl::Status GetDb(const std::string& base_url, const std::string& user) {
  CouchClient couch({.base_url = base_url, .username = user, .password = user.empty() ? "" : "pw"});
  absl::StatusOr<HttpResponse> response = couch.Get("/db");
  if (!response.ok()) return response.status();
  return HttpError(*response, "reading db", base_url);
}

TEST(HttpErrorTest, A401WithoutCredentialsSaysNoneWereGiven) {
  ScriptedHttpServer couch(WantsAUser);
  absl::Status none = GetDb(couch.url(), "");
  EXPECT_TRUE(absl::IsUnauthenticated(none)) << none;
  EXPECT_THAT(none.message(), HasSubstr(absl::StrCat(
                                  "reading db at ", couch.url(),
                                  ": CouchDB wants credentials and none were given "
                                  "(unauthorized: You are not a server admin.)")));
  EXPECT_THAT(none.message(), Not(HasSubstr("refused the credentials")));

  absl::Status wrong = GetDb(couch.url(), "admin");
  EXPECT_TRUE(absl::IsUnauthenticated(wrong)) << wrong;
  EXPECT_THAT(wrong.message(), HasSubstr("CouchDB refused the credentials"));
}

// Every 403 said "writing design documents needs a database or server admin", also to cnp
// derive reading _changes or writing with _bulk_docs, where no admin is needed (found by a
// review). The advice is now the request's: design documents for a design document's write,
// else the database (or server endpoint) the user may not use.
TEST(HttpErrorTest, A403SaysWhatTheRequestNeeded) {
  ScriptedHttpServer couch([](const HttpRequest&) -> ScriptedResponse {
    return {403, R"({"error":"forbidden","reason":"You are not allowed to access this db."})"};
  });
  CouchClient http({.base_url = couch.url()});
  auto refused = [&](absl::StatusOr<HttpResponse> response) {
    EXPECT_TRUE(response.ok()) << response.status();
    absl::Status status = response.ok() ? HttpError(*response, "doing it", couch.url()) : response.status();
    EXPECT_TRUE(absl::IsPermissionDenied(status)) << status;
    return std::string(status.message());
  };
  std::string changes = refused(http.Get("/orgs/_changes?since=0&limit=500"));
  EXPECT_THAT(changes, HasSubstr("not allowed (forbidden: You are not allowed to access this db.); the user lacks "
                                 "permission for database orgs (GET /orgs/_changes)"));
  EXPECT_THAT(changes, Not(HasSubstr("design documents")));
  std::string bulk = refused(http.Post("/a%2Fb/_bulk_docs", R"({"docs":[]})"));
  EXPECT_THAT(bulk, HasSubstr("; the user lacks permission for database a/b (POST /a%2Fb/_bulk_docs)"));
  EXPECT_THAT(bulk, Not(HasSubstr("design documents")));
  EXPECT_THAT(refused(http.Get("/_db_updates?feed=longpoll")),
              HasSubstr("; the user lacks permission for GET /_db_updates"));
  // Reading a design document is a member's right, not an admin's.
  EXPECT_THAT(refused(http.Get("/orgs/_design/x")), Not(HasSubstr("design documents")));
  // cnp upload's and sync's writes of design documents keep their advice.
  EXPECT_THAT(refused(http.Put("/orgs/_design/x", "{}")),
              HasSubstr("not allowed (forbidden: You are not allowed to access this db.); writing design "
                        "documents needs a database or server admin"));
  EXPECT_THAT(refused(http.Delete("/orgs/_design%2Fx?rev=1-a")),
              HasSubstr("; writing design documents needs a database or server admin"));
  // cnp derive's Mango index is a design document; creating its target database, a server's.
  EXPECT_THAT(refused(http.Post("/orgs/_index", R"({"index":{"fields":["mr_key"]}})")),
              HasSubstr("; a Mango index is a design document: writing one needs a database or "
                        "server admin"));
  EXPECT_THAT(refused(http.Put("/a%2Fb", "")),
              HasSubstr("; creating database a/b needs a server admin"));
  EXPECT_THAT(refused(http.Put("/orgs/_security", "{}")),
              HasSubstr("; changing a database's security needs a database admin"));
}

// Found by a review with a server answering for CouchDB: a redirect read as "CouchDB answered
// HTTP 302", and a connection that broke mid-answer did not say which request it was.
TEST(HttpErrorTest, ARedirectSaysItIsNotFollowedAndABrokenAnswerNamesItsRequest) {
  ScriptedHttpServer couch([](const HttpRequest& r) -> ScriptedResponse {
    if (r.target == "/moved") return {302, ""};
    ScriptedResponse gone;
    gone.hang_up = true;
    return gone;
  });
  CouchClient http({.base_url = couch.url()});
  absl::StatusOr<HttpResponse> moved = http.Get("/moved");
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_THAT(HttpError(*moved, "reading moved", couch.url()).message(),
              HasSubstr("answered HTTP 302, a redirect, which cnp does not follow"));

  absl::StatusOr<HttpResponse> broken = http.Put("/db/_design/towns?batch=ok", "{}");
  ASSERT_FALSE(broken.ok());
  EXPECT_THAT(broken.status().message(),
              HasSubstr(absl::StrCat("cannot reach CouchDB at ", couch.url(),
                                     " (PUT /db/_design/towns): ")));
}

// Found by a data-safety probe: a write whose connection was reused and broke before any
// answer was sent again by libcurl on a new connection; the write had been applied, so the
// second one conflicted, and cnp upload reported its own update as someone else's edit. A
// write is sent once; its lost answer is an error that says it may have been applied.
TEST(HttpErrorTest, AWriteWhoseAnswerIsLostIsNotSentAgain) {
  ScriptedHttpServer couch([](const HttpRequest& r) -> ScriptedResponse {
    if (r.method == "GET") return {200, "{}"};
    ScriptedResponse gone;
    gone.hang_up = true;
    return gone;
  });
  CouchClient http({.base_url = couch.url()});
  ASSERT_TRUE(http.Get("/db").ok());  // a connection kept for the next request
  absl::StatusOr<HttpResponse> put = http.Put("/db/_design/towns", "{}");
  EXPECT_FALSE(put.ok());
  EXPECT_THAT(couch.requests(), ElementsAre("GET /db", "PUT /db/_design/towns"));
  // Reads are still retried as libcurl does on a connection found closed: nothing is lost.
  // A POST that only reads is one: sent again, on a new connection, once this one breaks.
  ASSERT_TRUE(http.Get("/db").ok());
  absl::StatusOr<HttpResponse> find = http.Post("/db/_find", R"({"selector":{}})");
  EXPECT_FALSE(find.ok());
  EXPECT_EQ(couch.requests().size(), 5u);  // GET, PUT, GET, POST twice
  EXPECT_EQ(couch.requests().back(), "POST /db/_find");
}

}  // namespace
}  // namespace cnp::couchdb
