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

}  // namespace
}  // namespace cnp::couchdb
