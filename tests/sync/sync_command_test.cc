// cnp sync's command line, run in process against a scripted CouchDB: a database's URL given as
// CouchDB's is a usage error (exit 2), as cnp derive has it; it was exit 1 (a data-safety probe).
#include <optional>
#include <sstream>
#include <string>

#include "client/sync/sync_command.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/scripted_http_server.h"

namespace cnp::client::sync {
namespace {

using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;
using ::testing::HasSubstr;

std::optional<std::string> NoEnv(const char*) { return std::nullopt; }

TEST(SyncCommandTest, ADatabasesUrlIsAUsageError) {
  ScriptedHttpServer couch([](const HttpRequest& r) -> ScriptedResponse {
    if (r.target == "/db/" || r.target == "/db") return {200, R"({"db_name": "db"})"};
    if (r.target == "/") return {200, R"({"couchdb": "Welcome", "version": "3.4.3"})"};
    return {404, R"({"error": "not_found", "reason": "Database does not exist."})"};
  });
  for (const bool once : {true, false}) {
    std::ostringstream out, err;
    const int status =
        RunSync(once ? std::vector<std::string>{"cnp sync", "--once", couch.url() + "/db", "reg"}
                     : std::vector<std::string>{"cnp sync", couch.url() + "/db", "reg"},
                {.out = out, .err = err, .env = NoEnv});
    EXPECT_EQ(status, 2) << out.str() << err.str();
    EXPECT_THAT(err.str(), HasSubstr("/db is the URL of the database db, not CouchDB's root"));
  }
  // CouchDB's root itself goes on to the registry (missing here: exit 1).
  std::ostringstream out, err;
  EXPECT_EQ(RunSync({"cnp sync", "--once", couch.url(), "reg"},
                    {.out = out, .err = err, .env = NoEnv}),
            1)
      << out.str() << err.str();
  EXPECT_THAT(out.str() + err.str(), HasSubstr("the registry database \"reg\" does not exist"));
}

}  // namespace
}  // namespace cnp::client::sync
