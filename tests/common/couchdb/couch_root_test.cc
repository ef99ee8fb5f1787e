// What a command that found a database missing asks of the URL it was given: only a database's
// URL given for CouchDB's root is said so; anything else GET / answers (a proxy that does not
// pass it on, a failure) leaves the command's own "does not exist" message alone.
#include "common/couchdb/couch_root.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/scripted_http_server.h"

namespace cnp::couchdb {
namespace {

using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;

TEST(CheckNotADatabaseUrlTest, OnlyADatabasesAnswerIsTheMistake) {
  ScriptedHttpServer database([](const HttpRequest&) -> ScriptedResponse {
    return {200, R"({"db_name":"orgs","doc_count":2})"};
  });
  CouchClient at_database({.base_url = database.url() + "/orgs"});
  absl::Status mistake = CheckNotADatabaseUrl(at_database, "names the databases");
  EXPECT_TRUE(absl::IsInvalidArgument(mistake)) << mistake;
  EXPECT_TRUE(absl::StrContains(
      mistake.message(), absl::StrCat(database.url(), "/orgs is the URL of the database orgs, "
                                                      "not CouchDB's root; pass CouchDB's root URL "
                                                      "(here probably ", database.url(), ")")))
      << mistake;

  for (const ScriptedResponse& answer :
       {ScriptedResponse{200, "<html>a proxy's page</html>"},
        ScriptedResponse{404, R"({"error":"not_found"})"},
        ScriptedResponse{200, R"({"couchdb":"Welcome"})"},
        ScriptedResponse{500, R"({"error":"internal"})"}}) {
    ScriptedHttpServer other([answer](const HttpRequest&) { return answer; });
    CouchClient couch({.base_url = other.url()});
    absl::Status status = CheckNotADatabaseUrl(couch, "names the databases");
    EXPECT_TRUE(status.ok()) << answer.status << " " << answer.body << ": " << status;
  }
  // The strict check of cnp derive refuses the proxy's page all the same.
  ScriptedHttpServer proxy([](const HttpRequest&) -> ScriptedResponse {
    return {200, "<html>a proxy's page</html>"};
  });
  CouchClient couch({.base_url = proxy.url()});
  EXPECT_TRUE(absl::IsInvalidArgument(CheckCouchRoot(couch, "names the databases")));
}

}  // namespace
}  // namespace cnp::couchdb
