// `cnp sync` stopped by SIGINT or SIGTERM: the database in hand is finished (its design
// document and _local/cnp-sync record both written), then it stops with a message and the
// exit status --help gives: 0 while following, 128 + the signal for a --once pass cut short.
// The signal is sent by the scripted CouchDB while it answers, so it arrives mid-run.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/sync/sync_command.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/scripted_http_server.h"

namespace cnp::upload::testing {
namespace {

using ::cnp::testing::HttpRequest;
using ::cnp::testing::ScriptedHttpServer;
using ::cnp::testing::ScriptedResponse;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kRegistry[] =
    R"({"rows": [{"id": "towns@classification:account", "doc": {)"
    R"("_id": "towns@classification:account", "_rev": "1-r", "type": "cnp_design_document", )"
    R"("name": "towns", "target": {"classification": "account", "databases": ["account/*"]}, )"
    R"("design_document": {"_id": "_design/towns", "language": "python", )"
    R"("views": {"by_town": {"map": "myviews.townmap|1"}}}}}]})";

std::optional<std::string> NoEnv(const char*) { return std::nullopt; }

// Answers the registry and `all_dbs`; a document is missing when read and stored when put;
// the first request that starts with `signal_on` ("METHOD target") has `signal` sent to this
// process before it is answered; the first `fail_once` ("METHOD target") is answered 500.
class SignallingCouch {
 public:
  SignallingCouch(std::string all_dbs, std::string signal_on, int signal,
                  std::string fail_once = "")
      : all_dbs_(std::move(all_dbs)),
        signal_on_(std::move(signal_on)),
        signal_(signal),
        fail_once_(std::move(fail_once)),
        server_([this](const HttpRequest& r) { return Answer(r); }) {}

  std::string url() const { return server_.url(); }
  std::vector<std::string> requests() const { return server_.requests(); }

 private:
  ScriptedResponse Answer(const HttpRequest& r) {
    absl::MutexLock lock(&mu_);
    const std::string call = absl::StrCat(r.method, " ", r.target);
    if (!signalled_ && absl::StartsWith(call, signal_on_)) {
      signalled_ = true;
      kill(getpid(), signal_);
    }
    if (call == fail_once_ && !failed_) {
      failed_ = true;
      return {500, R"({"error": "internal_server_error", "reason": "not yet"})"};
    }
    if (call == "GET /_db_updates?since=now") return {200, R"({"results": [], "last_seq": "1"})"};
    if (call == "GET /_all_dbs") return {200, all_dbs_};
    if (call == "GET /reg/_all_docs?include_docs=true&limit=500") return {200, kRegistry};
    if (absl::StartsWith(call, "GET /_db_updates?feed=longpoll")) {
      return {200, R"({"results": [{"db_name": "account/new", "type": "created"}],
                       "last_seq": "2"})"};
    }
    if (r.method == "GET") return {404, R"({"error": "not_found", "reason": "missing"})"};
    if (r.method == "PUT") return {201, R"({"ok": true, "rev": "1-x"})"};
    return {500, R"({"error": "unexpected"})"};
  }

  absl::Mutex mu_;
  const std::string all_dbs_;
  const std::string signal_on_;
  const int signal_;
  const std::string fail_once_;
  bool signalled_ ABSL_GUARDED_BY(mu_) = false;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  ScriptedHttpServer server_;
};

TEST(StopSignalTest, SigtermWhileFollowingStopsCleanlyWithStatusZero) {
  SignallingCouch couch(R"(["reg"])", "GET /_db_updates?feed=longpoll&timeout=30000&since=1",
                        SIGTERM);
  std::ostringstream out, err;
  const int status = client::sync::RunSync({"cnp sync", couch.url(), "reg"},
                                           {.out = out, .err = err, .env = NoEnv});
  EXPECT_EQ(status, 0) << out.str() << err.str();
  EXPECT_THAT(err.str(), HasSubstr("cnp sync: stopped by SIGTERM once the database in hand "
                                   "was done; the next run catches up"));
  // The database the poll announced was not taken up after the signal.
  EXPECT_THAT(couch.requests(), Not(Contains(HasSubstr("account%2Fnew"))));
}

// A follower that met an error on its way (a write CouchDB failed, reported and due to be
// tried again) and is then stopped exits 0 too, as --help says: the error was reported when
// it happened, and the next run catches up. Before, it exited 1.
TEST(StopSignalTest, AFollowerStoppedAfterAnErrorExitsZero) {
  SignallingCouch couch(R"(["account/a1", "reg"])", "GET /_db_updates?feed=longpoll", SIGTERM,
                        "PUT /account%2Fa1/_design/towns");
  std::ostringstream out, err;
  const int status = client::sync::RunSync({"cnp sync", couch.url(), "reg"},
                                           {.out = out, .err = err, .env = NoEnv});
  EXPECT_EQ(status, 0) << out.str() << err.str();
  EXPECT_THAT(out.str() + err.str(), HasSubstr("not yet"));
  EXPECT_THAT(err.str(), HasSubstr("cnp sync: stopped by SIGTERM"));
}

TEST(StopSignalTest, SigintDuringAOncePassFinishesTheDatabaseInHandAndExits130) {
  // The signal comes while account/a1's design document is being read.
  SignallingCouch couch(R"(["account/a1", "account/a2", "reg"])",
                        "GET /account%2Fa1/_design/towns", SIGINT);
  std::ostringstream out, err;
  const int status = client::sync::RunSync({"cnp sync", "--once", couch.url(), "reg"},
                                           {.out = out, .err = err, .env = NoEnv});
  EXPECT_EQ(status, 130) << out.str() << err.str();
  EXPECT_THAT(err.str(), HasSubstr("cnp sync: stopped by SIGINT before the pass was over; run "
                                   "it again to finish it"));
  const std::vector<std::string> requests = couch.requests();
  // account/a1 was finished: its design document and the record that it is cnp sync's...
  EXPECT_THAT(requests, Contains("PUT /account%2Fa1/_design/towns"));
  EXPECT_EQ(std::count(requests.begin(), requests.end(), "PUT /account%2Fa1/_local/cnp-sync%3Atowns"), 2);
  // ...and account/a2 never begun.
  EXPECT_THAT(requests, Not(Contains(HasSubstr("account%2Fa2"))));
}

}  // namespace
}  // namespace cnp::upload::testing
